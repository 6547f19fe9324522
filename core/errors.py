"""The one error tree of corral. Foreign exceptions are wrapped once, at the boundary."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """JetStream API error codes (the ``err_code`` of an API error), named as nats-py's
    ``nats-jetstream`` package names them; the few it does not name follow the server's own
    identifiers. Callers branch on these, never on an error's description text."""

    BAD_REQUEST = 10003  #: the server rejected the request as malformed
    CONSUMER_NOT_FOUND = 10014  #: no such consumer
    INSUFFICIENT_RESOURCES = 10023  #: the server is out of the resources a write needs
    MESSAGE_NOT_FOUND = 10037  #: no such stream message
    STORAGE_RESOURCES_EXCEEDED = 10047  #: the account or server storage limit is reached
    STREAM_NAME_IN_USE = 10058  #: a stream of that name exists with another config
    STREAM_NOT_FOUND = 10059  #: no such stream
    STREAM_WRONG_LAST_SEQUENCE = 10071  #: a compare-and-set publish found the subject rewritten
    STREAM_STORE_FAILED = 10077  #: a stream limit refused the message (max msgs, bytes, per subject)
    BATCH_DUPLICATE_MSG_ID = 10201  #: an atomic batch holds a Nats-Msg-Id the stream has seen; nothing of it is stored



class CorralError(Exception):
    """Raised for any failure corral itself reports; the message is meant for an operator."""

    title = "corral error"


class ConfigError(CorralError):
    """Raised when settings, flags or declarations are wrong before anything runs."""

    title = "configuration error"


class NotFoundError(CorralError):
    """Raised when a named job, queue, host, schedule, group, bot or dead letter does not exist."""

    title = "not found"


class NothingToDoError(CorralError):
    """Raised when a request would change nothing: the job already ended, every job was a duplicate."""

    title = "nothing to do"


class JobError(CorralError):
    """Raised when a job cannot be accepted or processed."""

    title = "job error"


class InvalidJobError(JobError):
    """Raised when a job (or a value that goes into a subject) fails validation."""

    title = "invalid job"


class UnknownKindError(JobError):
    """Raised when no handler is registered for a job's kind."""

    title = "unknown kind"


class TransportError(CorralError):
    """Raised when NATS cannot be reached or does not answer in time."""

    title = "NATS unreachable"


class StreamFullError(CorralError):
    """Raised when the jobs stream or the server's store refuses a publish because it is full."""

    title = "stream full"


class MissingResourceError(CorralError):
    """Raised when a stream, consumer or bucket is absent (run `corral provision`)."""

    title = "not provisioned"


class NameTakenError(CorralError):
    """Raised when a bot name is held by another live bot."""

    title = "bot name taken"


class HandlerProcessError(JobError):
    """Raised when a ``@process`` handler's child process dies, or its exception cannot be rebuilt in the bot."""

    title = "handler process failed"


class ResultAlreadyRecordedError(JobError):
    """Raised when a job's result subject already holds a result (the fence refused a second)."""


class IllegalTransitionError(CorralError):
    """Raised when a bot state change is not allowed by the state machine."""
