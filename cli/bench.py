"""`corral bench SCENARIO`: the benchmarks own their command (:mod:`corral.bench.command`); the CLI lists it."""

from corral.bench.command import cmd, register


__all__ = ["cmd", "register"]
