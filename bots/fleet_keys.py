"""Moved: the fleet's vocabulary lives in :mod:`corral.core.fleet` (names in :mod:`corral.core.names`).

The supervisor's modules still import it from here; once they import
:mod:`corral.core.fleet` directly this module goes.
"""

from __future__ import annotations

from corral.core.fleet import *  # noqa: F403 - the same names, one implementation
from corral.core.fleet import __all__ as _moved
from corral.core.leases import is_gone as is_tombstone
from corral.core.names import fleet_key_subject as key_subject

__all__ = [*_moved, "is_tombstone", "key_subject"]
