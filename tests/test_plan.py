"""The lowering decision as a pure function: a table of einsums, no graphs."""

import pytest

from keras_ov_einsum.einsum.equation import parse_equation
from keras_ov_einsum.einsum.plan import plan_lowering

N = None  # a dynamic dimension, as keras-hub's generate builds them

# (equation, x shape, kernel shape, kernel index,
#  expected (batch, rows, contracted, columns, transpose_b, kernel copied))
LOWERED = [
    # Projections in keras-hub: the kernel is already [K..., N...]
    (
        "btd,dnh->btnh",
        (N, N, 8),
        (8, 2, 4),
        1,
        ("", "bt", "d", "nh", False, False),
    ),
    (
        "btnh,nhd->btd",
        (N, N, 2, 4),
        (2, 4, 8),
        1,
        ("", "bt", "nh", "d", False, False),
    ),
    (
        "abc,cde->abde",
        (N, N, 8),
        (8, 2, 4),
        1,
        ("", "ab", "c", "de", False, False),
    ),
    (
        "bquh,uhm->bqm",
        (N, N, 2, 4),
        (2, 4, 8),
        1,
        ("", "bq", "uh", "m", False, False),
    ),
    # The kernel is [N, K]: MatMul reads it with transpose_b, no copy
    (
        "bhwc,wkc->bhwk",
        (2, 3, 4, 5),
        (4, 6, 5),
        1,
        ("w", "bh", "c", "k", True, False),
    ),
    ("bd,nd->bn", (N, 8), (6, 8), 1, ("", "b", "d", "n", True, False)),
    # Interleaved kernel [N, K, N]: a physical transpose is unavoidable
    ("th,ehi->eti", (N, 8), (2, 8, 4), 1, ("", "t", "h", "ei", False, True)),
    # Batch label shared by both operands and the output
    (
        "etm,emh->eth",
        (3, N, 8),
        (3, 8, 4),
        1,
        ("e", "t", "m", "h", False, False),
    ),
    # The kernel first; output order independent of the operand order
    (
        "dnh,btd->btnh",
        (N, N, 8),
        (8, 2, 4),
        0,
        ("", "bt", "d", "nh", False, False),
    ),
    # Summed-out labels on either side
    (
        "btxd,dn->btn",
        (N, N, 3, 8),
        (8, 4),
        1,
        ("", "bt", "d", "n", False, False),
    ),
    (
        "btd,dnz->btn",
        (N, N, 8),
        (8, 4, 3),
        1,
        ("", "bt", "d", "n", False, False),
    ),
    # An ellipsis in the input
    ("...d,dn->...n", (N, N, 8), (8, 4), 1, ("", "AB", "d", "n", False, False)),
    # [N, K] kernels whose buffer also reads as [K, N]: transposed, not
    # transpose_b (the CPU plugin shares one packed copy; equivalence suite)
    ("bd,nd->bn", (N, 8), (8, 8), 1, ("", "b", "d", "n", False, True)),
    ("xbc,abc->xa", (N, 4, 4), (4, 4, 4), 1, ("", "x", "bc", "a", False, True)),
    ("xbc,abc->xa", (N, 4, 4), (8, 4, 4), 1, ("", "x", "bc", "a", True, False)),
    # x summed over, then transposed: lowered unless the transpose only
    # moves axes of size 1 (see DECLINED)
    (
        "beda,bac->cd",
        (2, N, 2, 2),
        (2, 2, 3),
        1,
        ("", "d", "ba", "c", False, False),
    ),
    (
        "adeb,bac->cd",
        (2, 3, N, 1),
        (1, 2, 4),
        1,
        ("", "d", "ba", "c", False, False),
    ),
]


@pytest.mark.parametrize(
    "equation, x_shape, w_shape, kernel_index, expected",
    LOWERED,
    ids=[row[0] for row in LOWERED],
)
def test_lowered(equation, x_shape, w_shape, kernel_index, expected):
    shapes = [x_shape, w_shape] if kernel_index == 1 else [w_shape, x_shape]
    parsed = parse_equation(equation, [len(s) for s in shapes])
    plan = plan_lowering(parsed, shapes, kernel_index)
    assert plan, plan
    copied = plan.kernel_permutation is not None
    assert (
        plan.batch,
        plan.rows,
        plan.contracted,
        plan.columns,
        plan.transpose_b,
        copied,
    ) == expected


# (equation, x shape, kernel shape, kernel index, a part of the reason)
DECLINED = [
    ("ii,ij->ij", (4, 4), (4, 5), 1, "label 'i' repeats within the input"),
    ("bd,dd->bd", (2, 4), (4, 4), 1, "label 'd' repeats within the kernel"),
    ("btd,dn->btn", (N, N, 7), (8, 4), 1, "label 'd' has size 7 in the input"),
    ("...d,...dn->...n", (2, 8), (3, 8, 4), 1, "the kernel has an ellipsis"),
    # Nothing to contract: stock's broadcast multiply is the better kernel
    ("bi,j->bij", (N, 4), (5,), 1, "no label is contracted"),
    ("bij,j->bij", (N, 4, 5), (5,), 1, "no label is contracted"),
    ("...n,d->...nd", (N, 4), (5,), 1, "no label is contracted"),
    # K or N of 1: OpenVINO miscompiles some of these (equivalence suite)
    ("d,d->", (8,), (8,), 1, "a matrix-vector product (K or N is 1)"),
    ("abde,acd->be", (1, 1, 2, 1), (1, 1, 2), 1, "K or N is 1"),
    ("eadcb,bc->ace", (1, 1, 1, 3, N), (1, 3), 1, "K or N is 1"),
    ("dac,abc->cb", (1, 2, 1), (2, 2, 1), 1, "a batch axis of size 1"),
    # A batched MatMul with one static row (thorough profile)
    ("etm,emh->eth", (2, 1, 8), (2, 8, 4), 1, "a batched matrix-vector"),
    ("dfea,abce->bcde", (1, 1, 2, 2), (2, 2, 1, 2), 1, "a batched matrix"),
    # x summed over, then transposed by moving only axes of size 1
    # (frameworks suite, thorough run); lowered when other axes move too
    ("beda,bac->cd", (1, 1, 2, 2), (1, 2, 2), 1, "moving axes of size 1"),
    ("feda,ac->dcf", (1, 2, 3, 3), (3, 3), 1, "moving axes of size 1"),
    # A dynamic label shared with the kernel: a 1 broadcasts at run time,
    # which a MatMul does not (equivalence suite)
    ("btd,dn->btn", (N, N, N), (8, 4), 1, "label 'd' is dynamic"),
    ("ab,acde->bcd", (N, 1), (2, 1, 2, 1), 1, "label 'a' is dynamic"),
    ("bsd,bdn->bsn", (N, N, 8), (2, 8, 4), 1, "label 'b' is dynamic"),
]


@pytest.mark.parametrize(
    "equation, x_shape, w_shape, kernel_index, reason",
    DECLINED,
    ids=[row[0] for row in DECLINED],
)
def test_declined(equation, x_shape, w_shape, kernel_index, reason):
    shapes = [x_shape, w_shape] if kernel_index == 1 else [w_shape, x_shape]
    parsed = parse_equation(equation, [len(s) for s in shapes])
    decision = plan_lowering(parsed, shapes, kernel_index)
    assert not decision
    assert reason in decision.reason


def test_three_operands_declined():
    parsed = parse_equation("ij,jk,kl->il", (2, 2, 2))
    decision = plan_lowering(parsed, [(2, 3), (3, 4), (4, 5)], 1)
    assert not decision
    assert "3 operand(s)" in decision.reason


def test_scalar_declined():
    parsed = parse_equation(",ij->ij", (0, 2))
    decision = plan_lowering(parsed, [(), (2, 3)], 0)
    assert not decision
    assert "scalar" in decision.reason


def test_describe_names_the_layout():
    parsed = parse_equation("btd,dnh->btnh", (3, 3))
    plan = plan_lowering(parsed, [(N, N, 8), (8, 2, 4)], 1)
    assert plan.describe() == (
        "MatMul(transpose_b=False), kernel [8, 8], kernel reshaped (no copy)"
    )


def test_each_workaround_names_a_reproducer_that_exists():
    """A decline for an OpenVINO bug names its strict-xfail reproducer in
    test_openvino_bugs.py, where there is one: the day an upgrade fixes
    the bug, that test fails and says which decline to revisit."""
    import test_openvino_bugs

    from keras_ov_einsum.einsum.plan import DECLINES

    named = [rule.reproducer for rule in DECLINES if rule.reproducer]
    assert named  # at least the reduce-transpose-reshape bug
    for rule in DECLINES:
        assert rule.openvino_bug or rule.reproducer is None
    for name in named:
        assert callable(getattr(test_openvino_bugs, name, None)), name
