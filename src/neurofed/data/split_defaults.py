"""The defaults of a site's splits.

A module of its own (numbers only, no import) so that the command line can show them in its
help without loading the data layer; :mod:`neurofed.data.splits` is their user.
"""

__all__ = ["DEFAULT_SEED", "DEFAULT_TEST_FRACTION", "DEFAULT_VALIDATION_FRACTION"]

#: Seed of a site's first splits.
DEFAULT_SEED = 0
#: FeTS's 4:1 train/validation split.
DEFAULT_VALIDATION_FRACTION = 0.2
#: No test split unless the custodian asks for one.
DEFAULT_TEST_FRACTION = 0.0
