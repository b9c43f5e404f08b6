"""hpsearch: the cs231n hyperparameter-search recipe as a command-line tool."""

from __future__ import annotations

__version__ = "0.1.0"
