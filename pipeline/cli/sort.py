"""`swapstream sort`: split a faceset by person."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("sort", help="split a faceset by person into subfolders, outliers apart",
                       description="Group the faces of FACESET by person and move them into "
                                   "FACESET/person_1 (the largest group), person_2, ... and "
                                   "FACESET/outliers (faces far from their group, groups too small "
                                   "to be a person). Each folder is a faceset with a contact sheet; "
                                   "FACESET stays a valid faceset. A summary table is printed last.")
    p.add_argument("faceset", metavar="FACESET", help="faceset directory from swapstream extract")
    p.add_argument("--dry-run", action="store_true", help="print the groups; move and write nothing")
    p.add_argument("--threshold", type=float, default=None,
                   help="largest embedding distance within one person (0.41, dlib's same-person "
                        "distance; lower splits more)")
    p.add_argument("--outlier", type=float, default=None,
                   help="a face farther than this share of --threshold from its group's centre is "
                        "an outlier (0.75)")
    p.set_defaults(func=run)


def run(a) -> int:
    from swapstream.training.sort import SortSettings, sort_faceset

    given = {k: v for k, v in (("threshold", a.threshold), ("outlier", a.outlier)) if v is not None}
    report = sort_faceset(a.faceset, SortSettings(dry_run=a.dry_run, **given), progress=not a.quiet)
    for line in report.lines() + report.coverage_lines():
        print(line)
    return 0
