"""advisor: will this model fit, in which precision, and how fast will it answer?"""

__version__ = "0.1.0"
