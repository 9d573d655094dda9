"""The method's stages and the runner that drives them (see shared/DESIGN.md for the row contract)."""

from .runner import RunConflict, Runner

__all__ = ["Runner", "RunConflict"]
