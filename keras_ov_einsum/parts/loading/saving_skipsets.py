"""keras's weight loading computes each skip set once, as keras meant to.

``saving_lib._walk_saveable`` visits every layer of a model it loads or
saves and skips the attributes a plain ``Layer()`` has, from
``get_attr_skipset(obj_type)``. That function caches the set in keras's
global state, but reads the cache under ``saving_attr_skiplist_<type>``
and writes it under ``saving_attr_skipset_<type>`` (keras 3.12-3.15): the
cache never answers, and every visit builds a new ``Layer()`` and lists its
``dir()`` (docs/native-gap.md has what that costs a load).

This part stores each set under the key keras reads as well, so that
keras's own cache answers from the second visit on; ``clear_session()``
clears both keys, as keras intends. The set is the one stock computes.
The keras fix is the one key (not upstreamed here: keras's saving code,
not its OpenVINO backend).
"""

import functools

from ...core import decisions
from ...core.part import Hook, Part

__all__ = ["LABEL", "PART"]

LABEL = "saving_skipsets: a skip set kept where keras's cache looks for it"
_SAVING_LIB = "keras.src.saving.saving_lib"
_READ_KEY = "saving_attr_skiplist_{}"  # the key get_attr_skipset reads


def _get_attr_skipset_wrapper(stock_get_attr_skipset):
    @functools.wraps(stock_get_attr_skipset)
    def get_attr_skipset(obj_type):
        from keras.src.backend.common import global_state

        key = _READ_KEY.format(obj_type)
        cached = global_state.get_global_attribute(key, None)
        skipset = stock_get_attr_skipset(obj_type)
        if cached is None:
            global_state.set_global_attribute(key, skipset)
            decisions.count(LABEL)
        return skipset

    return get_attr_skipset


PART = Part(
    name="saving_skipsets",
    summary="load_weights finds the attributes to skip once a layer type, "
    "not once a layer",
    wraps=((Hook(_SAVING_LIB, "get_attr_skipset"), _get_attr_skipset_wrapper),),
)
