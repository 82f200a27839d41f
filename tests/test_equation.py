"""Parsing: spaces, implicit output and ellipsis become plain letters."""

import pytest

from keras_ov_einsum.einsum.equation import EquationError, parse_equation

# (subscripts, operand ranks, expected "inputs->output" after parsing)
PARSED = [
    ("btd,dnh->btnh", (3, 3), "btd,dnh->btnh"),
    ("b t d , d n h -> b t n h", (3, 3), "btd,dnh->btnh"),  # spaces
    ("ij,jk", (2, 2), "ij,jk->ik"),  # implicit: single labels, sorted
    ("ba,ac", (2, 2), "ba,ac->bc"),
    ("ij,jk->", (2, 2), "ij,jk->"),  # full contraction
    ("Ba,aB", (2, 2), "Ba,aB->"),  # upper case labels
    ("...d,dn->...n", (4, 2), "ABCd,dn->ABCn"),  # ellipsis -> fresh letters
    ("...d,dn->...n", (1, 2), "d,dn->n"),  # an empty ellipsis
    ("...d,dn", (3, 2), "ABd,dn->ABn"),  # implicit output keeps the ellipsis
    ("...n,d->...nd", (3, 1), "ABn,d->ABnd"),
    ("...,d->...d", (2, 1), "AB,d->ABd"),
    ("i...,...j->i...j", (3, 2), "iAB,Bj->iABj"),  # right-aligned broadcast
]


@pytest.mark.parametrize(
    "subscripts, ranks, expected", PARSED, ids=[row[0] for row in PARSED]
)
def test_parse(subscripts, ranks, expected):
    assert str(parse_equation(subscripts, ranks)) == expected


# (subscripts, operand ranks, a part of the error message)
MALFORMED = [
    ("ij,jk->ik->i", (2, 2), "More than one '->'"),
    ("ij,jk", (2,), "names 2 operand(s) but 1 were given"),
    ("ij,jk", (2, 3), "Operand 'jk' has 2 label(s) but rank 3"),
    ("i1,jk", (2, 2), "Invalid character(s) '1'"),
    ("ij,jk->iq", (2, 2), "Output character 'q' did not appear in the input"),
    ("ij,jk->ii", (2, 2), "Output character 'i' appears more than once"),
    ("...i...,j", (3, 1), "More than one '...'"),
    ("...ij,j->ij", (3, 1), "no '...' for the broadcast dimensions"),
    ("abc...,c", (2, 1), "more labels than its rank"),
]


@pytest.mark.parametrize(
    "subscripts, ranks, message", MALFORMED, ids=[row[0] for row in MALFORMED]
)
def test_malformed(subscripts, ranks, message):
    with pytest.raises(
        EquationError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        parse_equation(subscripts, ranks)


def test_not_a_string():
    with pytest.raises(EquationError, match="must be a string"):
        parse_equation(["ij"], (2,))
