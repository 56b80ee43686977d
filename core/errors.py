"""Errors a user can fix. The CLI prints the message as one line and exits 2.

Each message names the value, what was expected and how to fix it. Internal bugs raise anything
else and keep their traceback.
"""


class SwapstreamError(Exception):
    """Base class of every user-fixable error."""

    exit_code = 2  # what the CLI exits with after printing the message


class SourceLost(SwapstreamError):
    """A live source stopped delivering (camera unplugged, stream ended): the run ends with its
    outputs closed properly, exit code 1."""

    exit_code = 1


class OutputLost(SwapstreamError):
    """A live session's last working output failed mid-run (a full disk, a vanished receiver):
    the run ends, what that output wrote kept where it could be, exit code 1."""

    exit_code = 1


class InputError(SwapstreamError):
    """The input media is missing, unreadable, truncated or has no video."""


class OutputError(SwapstreamError):
    """The output path cannot be written."""


class ModelError(SwapstreamError):
    """The model checkpoint is missing, corrupt, of another preset, or lacks an identity."""


class FacesetError(SwapstreamError):
    """A faceset is missing, empty or inconsistent."""


class ConfigError(SwapstreamError):
    """A setting has a value that is not allowed."""


class TrainingError(SwapstreamError):
    """Training cannot go on as set up (it diverged, or its workers keep failing)."""
