"""The classifier side: a small CNN, its training and evaluation, and real + synthetic mixing."""
