"""keras's dtype policy map answers a path it does not hold without trying
every key as a regular expression when no key is one.

A quantized keras-hub model's layers take their dtype policies from a
``DTypePolicyMap`` that holds one entry a quantized layer.
``DTypePolicyMap.__getitem__`` answers a path it holds from its dict; for
any other path (every layer norm, dropout, attention and decoder block
asking for its compute dtype, at each of its calls) it runs
``re.fullmatch`` of every key against the path (docs/native-gap.md counts
the lookups of a load and a first ``generate()``).

A key with no regular-expression syntax in it (``re.escape`` leaves it as
it is) matches only the path equal to it, which the dict lookup already
answered: when every key of the map is such a plain string, no key can
match a path the map does not hold, and this part returns the map's
default policy, which is what stock returns for no match. Maps with a
pattern among their keys, keys that are not strings and paths that are not
strings get stock's lookup. Whether the keys hold a pattern is worked out
again whenever they change.
"""

import functools
import re

from ...core import decisions
from ...core.part import Hook, Part

__all__ = ["LABEL", "PART"]

LABEL = "policy_lookups: a policy map's default for a path no key can match"
_POLICY_MAP = "keras.src.dtype_policies.dtype_policy_map"
# On the map: (its keys when last checked, whether each is a plain string).
_CHECKED = "_keras_ov_einsum_plain_keys"


def _only_plain_keys(policy_map):
    """Whether every key of ``policy_map`` (a DTypePolicyMap) is a string
    that matches itself only."""
    keys = tuple(policy_map._policy_map)
    checked = policy_map.__dict__.get(_CHECKED)
    if checked is None or checked[0] != keys:
        plain = all(type(key) is str and re.escape(key) == key for key in keys)
        checked = (keys, plain)
        policy_map.__dict__[_CHECKED] = checked
    return checked[1]


def _getitem_wrapper(stock_getitem):
    @functools.wraps(stock_getitem)
    def getitem(self, key):
        if (
            type(key) is str
            and type(getattr(self, "_policy_map", None)) is dict
            and key not in self._policy_map
            and _only_plain_keys(self)
        ):
            decisions.count(LABEL)
            return self.default_policy
        return stock_getitem(self, key)

    return getitem


PART = Part(
    name="policy_lookups",
    summary="a dtype policy map without patterns answers a layer it holds "
    "nothing for at once, not by regex",
    wraps=(
        (Hook(_POLICY_MAP, "DTypePolicyMap.__getitem__"), _getitem_wrapper),
    ),
)
