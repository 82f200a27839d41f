"""The stepwise step model's key/value cache as a key and a value cache a
layer.

keras-hub's ``call_with_cache`` takes the whole cache, ``[batch, layers, 2,
length, heads, head_dim]``, reads each layer's part as ``cache[:, i,
...]`` and stacks the layers' updated parts again with ``ops.stack``. In
the stepwise part's step model that is, every step, a Gather copying each
layer's part out of the input (the CPU plugin runs these Gathers in its
reference kernel) and a Concat copying every layer's part into the output:
the whole cache copied twice, however few of its positions are filled,
which over a long generation costs a step more than its FullyConnected
layers (docs/native-gap.md, "Longer generations").

This part has the step model take and give a key and a value cache of
``[batch, length, heads, head_dim]`` a layer instead: the trace hands
``call_with_cache`` a stand-in for the stack whose ``[:, i, ...]`` is a
stand-in for layer i's stack, whose ``[:, 0, ...]`` and ``[:, 1, ...]``
are that layer's key and value Parameters, and each updated cache (the
items of keras's ``ops.stack`` Concats) becomes an output of its own. The
step model computes the same bits; only its boundary changes. With it the
stepwise part runs a one-row generation on a prefix of each cache that
holds the positions filled so far (``stepwise._generate``). Where a model
reads its cache otherwise (a stack itself is used, or a new cache is not
keras's stack of the updated ones) the part declines and the step model
keeps the whole cache, with the reason in ``explain()``.
"""

import functools

from ...core import backend
from ...core.kernel import constant_values
from ...core.part import Part
from . import stepwise

__all__ = ["LABEL", "PART", "Declined", "stand_in"]

LABEL = "layer_caches: the step model's key and value caches, layer by layer"


class Declined(ValueError):
    """The model's ``call_with_cache`` does not take its cache apart by
    layer as keras-hub's do."""


@functools.cache  # one class, made once keras is imported
def _stand_in_class():
    OpenVINOKerasTensor = backend.symbol("OpenVINOKerasTensor")

    class _StackedCaches(OpenVINOKerasTensor):
        """What ``call_with_cache`` gets for a stack of caches on axis 1:
        a tensor of the stack's shape that no step model may read (a
        Parameter the model does not declare), whose ``[:, i, ...]`` is
        item i: a cache, or the stand-in for a stack itself."""

        def __init__(self, items):
            import openvino as ov
            import openvino.opset14 as ov_opset

            first = items[0]
            if isinstance(first, _StackedCaches):
                first = first.output
            shape = list(first.get_partial_shape())
            shape.insert(1, ov.Dimension(len(items)))
            self.stack = ov_opset.parameter(
                ov.PartialShape(shape), first.get_element_type()
            )
            super().__init__(self.stack.output(0))
            self.items = items

        def __getitem__(self, indices):
            if (
                isinstance(indices, tuple)
                and len(indices) == 3
                and indices[0] == slice(None)
                and type(indices[1]) is int
                and 0 <= indices[1] < len(self.items)
                and indices[2] is Ellipsis
            ):
                item = self.items[indices[1]]
                if isinstance(item, _StackedCaches):
                    return item
                return OpenVINOKerasTensor(item)
            return super().__getitem__(indices)

        def shape_output(self, element_type):
            """The stack's shape as a ShapeOf of it would give it, from
            its first item's."""
            import openvino.opset14 as ov_opset

            first = self.items[0]
            if isinstance(first, _StackedCaches):
                inner = first.shape_output(element_type)
            else:
                inner = ov_opset.shape_of(first, element_type).output(0)
            rank = inner.get_partial_shape()[0].get_length()
            axis = ov_opset.constant(0, element_type)
            pieces = [
                ov_opset.gather(
                    inner, ov_opset.constant([0], element_type), axis
                ),
                ov_opset.constant([len(self.items)], element_type),
                ov_opset.gather(
                    inner,
                    ov_opset.constant(list(range(1, rank)), element_type),
                    axis,
                ),
            ]
            return ov_opset.concat(pieces, 0).output(0)

        def unstacked(self, new_stack):
            """The updated caches behind ``new_stack``, in the items'
            order, each stack taken apart as keras's ``ops.stack(items,
            axis=1)`` builds it: a Concat on axis 1 of one Unsqueeze on
            axis 1 an item. Raises ``Declined`` otherwise, or where the
            stack stood in for was read."""
            readers = {
                reader.get_node()
                for reader in self.stack.output(0).get_target_inputs()
            }
            others = {r for r in readers if r.get_type_name() != "ShapeOf"}
            if others:
                names = sorted({reader.get_type_name() for reader in others})
                raise Declined(
                    f"a stack of caches is read whole (by {', '.join(names)})"
                )
            # Its shape is read (a layer's attention mask reads the
            # cache's length): computed from the items' shapes instead.
            for shape_of in readers:
                shape_of.output(0).replace(
                    self.shape_output(shape_of.get_output_element_type(0))
                )
            concat = new_stack.get_node()
            parts = concat.input_values()
            if (
                concat.get_type_name() != "Concat"
                or concat.get_attributes()["axis"] != 1
                or len(parts) != len(self.items)
                or not all(map(_unsqueezed_on_axis_1, parts))
            ):
                raise Declined(
                    "a new cache is not keras's stack of the updated caches"
                )
            caches = []
            for item, part in zip(self.items, parts):
                cache = part.get_node().input_value(0)
                if isinstance(item, _StackedCaches):
                    caches.extend(item.unstacked(cache))
                else:
                    caches.append(cache)
            return caches

    return _StackedCaches


def stand_in(caches, layers):
    """The stand-in ``call_with_cache`` gets for its cache, ``[batch,
    layers, 2, length, heads, head_dim]``, from ``caches``: each layer's
    key and value caches (OpenVINO outputs, ``[batch, length, heads,
    head_dim]``), layer by layer. Its ``unstacked(new cache)`` gives the
    updated caches in the same order."""
    stacked = _stand_in_class()
    return stacked([stacked(caches[2 * i : 2 * i + 2]) for i in range(layers)])


def _unsqueezed_on_axis_1(output):
    node = output.get_node()
    return node.get_type_name() == "Unsqueeze" and (
        constant_values(node.input_value(1)) == [1]
    )


def _trace_per_layer(trace, causal_lm, **options):
    """The pass at ``stepwise.TRACE``: a key and a value cache a layer, the
    whole stack where the model reads it otherwise."""
    try:
        model, layout = trace(causal_lm, **options, per_layer=True)
    except Declined as declined:
        _record(causal_lm, False, str(declined))
        return trace(causal_lm, **options)
    _record(
        causal_lm,
        True,
        f"{2 * layout.layers} key and value caches of [batch, length, "
        f"{layout.heads}, {layout.head_dim}] instead of their stack",
    )
    return model, layout


_record = functools.partial(stepwise._record, label=LABEL)


PART = Part(
    name="layer_caches",
    summary="the step model takes a key and a value cache a layer, not "
    "keras-hub's stack of all of them",
    requires=("stepwise",),
    passes=((stepwise.TRACE, _trace_per_layer),),
)
