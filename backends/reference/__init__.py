"""The reference backend: an exact, deliberately slow, per-token interpreter (the oracle)."""

from nldsl.backends.reference.interpreter import Reference as Reference
from nldsl.backends.reference.interpreter import State as State
