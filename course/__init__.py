"""course: an auto-graded assignment system for a course on the engine inside large language models."""

__version__ = "0.1.0"
