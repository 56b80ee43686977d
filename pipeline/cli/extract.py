"""`swapstream extract`: aligned faces from videos or image folders, as a faceset."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("extract", help="extract aligned faces from videos or image folders",
                       description="Find, align and save every face of SRC (videos and/or folders "
                                   "of images) as a faceset for training; with --like, only the faces "
                                   "of that person. Says when the faces are of several people.")
    p.add_argument("sources", nargs="+", metavar="SRC", help="video files and/or image folders")
    p.add_argument("-o", "--output", required=True, help="faceset directory to write (or extend)")
    p.add_argument("--every", type=int, default=1, help="keep every Nth video frame (1)")
    p.add_argument("--min-size", type=int, default=64, help="smallest face height kept, px (64)")
    p.add_argument("--blur", type=float, default=0.0,
                   help="drop faces less sharp than this (variance of Laplacian; 0 keeps all)")
    p.add_argument("--like", nargs="+", metavar="REF", default=[],
                   help="keep only this person's faces: photos, a faceset folder or a video of them "
                        "(checked before any work; give it after SRC); other faces are counted and dropped")
    p.add_argument("--threshold", type=float, default=None,
                   help="with --like: largest embedding distance that is still the person (0.41, "
                        "dlib's same-person distance; lower is stricter)")
    p.set_defaults(func=run)


def run(a) -> int:
    from swapstream.training.extract import ExtractSettings, extract

    threshold = {} if a.threshold is None else {"threshold": a.threshold}
    settings = ExtractSettings(a.every, a.min_size, a.blur, like=a.like, **threshold)
    r = extract(a.sources, a.output, settings, progress=not a.quiet)
    for note in r.notes:
        print(f"note: {note}")
    dropped = f", {r.not_like} not the --like person" if a.like else ""
    print(f"wrote {r.faces} faces from {r.frames} frames to {a.output} "
          f"({r.too_small} too small, {r.too_blurry} too blurry{dropped}); contact sheet: {r.contact_sheet}")
    from swapstream.training.coverage import faceset_coverage

    cov = faceset_coverage(a.output)  # the whole faceset, when this run extended one
    print(cov.line())
    for w in cov.warnings():
        print(f"note: {w}")
    for s in r.sources_without_faces:
        print(f"note: no faces {'of the --like person ' if a.like else ''}found in {s}")
    if not a.like and r.identities > 1:
        sizes = [str(n) for n in r.identity_sizes]
        print(f"note: {r.identities} different people in this faceset ({', '.join(sizes[:-1])} and "
              f"{sizes[-1]} faces); keep one with --like REF or split it with swapstream sort {a.output}")
    return 0
