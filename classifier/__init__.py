"""The classifier side: a small CNN, its training and evaluation, and real + synthetic mixing."""

from classifier.commands import classify

__all__ = ["classify"]
