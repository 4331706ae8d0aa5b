"""One exception type for everything a user can get wrong.

Every message is a single line that names the problem and says how to fix it, so the CLI and the
server can show ``str(error)`` as is, without a traceback.
"""


class PointsegError(Exception):
    """A problem with the user's input, files or set-up (not a bug in pointseg)."""


class WeightsNotFoundError(PointsegError):
    """Backbone weights could not be found in any of the places pointseg looks."""


class ModelFileError(PointsegError):
    """A .pointseg model file is unreadable, of another version, or for other weights."""


class AnnotationError(PointsegError):
    """An annotation (file, point, scribble or class) is invalid."""


class ImageError(PointsegError):
    """An image cannot be read or is too large to read safely."""


class OutputError(PointsegError, OSError):
    """An output file or folder cannot be written (full or read-only disk, no permission, a file in the way).

    Also an :class:`OSError` (with ``errno``), so code that handles disk errors as such keeps working.
    """

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message
