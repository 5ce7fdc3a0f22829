"""The error classes callers may want to catch.

Bad arguments raise the builtin ``ValueError`` / ``TypeError``; the classes here mark conditions a
training script or a study runner may reasonably handle (a privacy budget running out, a module the
privacy engine cannot support, a checkpoint that does not match the run resuming it).

Example:
    >>> from research_ext.errors import PrivacyBudgetExceededError, ResearchExtError
    >>> issubclass(PrivacyBudgetExceededError, ResearchExtError)
    True
"""

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "DeviceUnavailableError",
    "PrivacyBudgetExceededError",
    "ResearchExtError",
    "StorageError",
    "StudyFailedError",
    "UnsupportedModuleError",
]


class ResearchExtError(Exception):
    """Base class of every research_ext-specific error."""


class DeviceUnavailableError(ResearchExtError, RuntimeError):
    """A device was named that this machine does not have (e.g. ``"cuda"`` with no GPU)."""


class PrivacyBudgetExceededError(ResearchExtError):
    """A private training run would spend more epsilon than its budget allows."""


class UnsupportedModuleError(ResearchExtError, ValueError):
    """A module whose per-sample gradients cannot be computed (or computed privately)."""


class CheckpointError(ResearchExtError, ValueError):
    """A checkpoint file cannot be used: empty, truncated, corrupt, or not a checkpoint at all.

    The message names the file and what is wrong with it.
    """


class CheckpointMismatchError(ResearchExtError, ValueError):
    """A checkpoint was saved by a run whose settings differ from the one loading it."""


class ConfigError(ResearchExtError, ValueError):
    """A study configuration is invalid; the message names the key, the value and what is allowed."""


class StudyFailedError(ResearchExtError, RuntimeError):
    """A study run stopped because its objective failed ``max_failures`` times (CLI exit 3)."""


class StorageError(ResearchExtError, RuntimeError):
    """A study's storage cannot be used (CLI exit 4): damaged, not writable, refused, unreachable.

    The message is one line: the storage (password redacted), the likely cause and what to do.
    """
