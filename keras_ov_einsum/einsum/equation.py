"""Parse an einsum equation into one label string per operand and the output.

Works on the subscripts string and operand ranks only, never on tensors.
Spaces are dropped, an implicit output is made explicit (NumPy's rule: labels
that occur exactly once, in sorted order, after the broadcast dimensions) and
every ellipsis is rewritten into fresh letters up front, so that every later
layer sees plain letters, one per axis.
"""

import dataclasses
import string

__all__ = ["Equation", "EquationError", "parse_equation"]

_ELLIPSIS = "..."
_LETTERS = string.ascii_letters
# Broadcast axes get upper-case letters first: they read as "not the user's".
_FRESH_ORDER = string.ascii_uppercase + string.ascii_lowercase


class EquationError(ValueError):
    """The equation is malformed or does not fit the operand ranks."""


@dataclasses.dataclass(frozen=True)
class Equation:
    """An einsum with one letter per axis: ``inputs`` and ``output`` labels.

    ``ellipsis_inputs`` tells, per operand, whether its labels came (partly)
    from an ellipsis: broadcasting rules differ for those axes.
    """

    inputs: tuple
    output: str
    ellipsis_inputs: tuple

    def __str__(self):
        return ",".join(self.inputs) + "->" + self.output


def parse_equation(subscripts, ranks):
    """The ``Equation`` of ``subscripts`` for operands of ``ranks``.

    Raises ``EquationError`` with the offending part of the equation when it
    is malformed or does not match the number or ranks of the operands.
    """
    if not isinstance(subscripts, str):
        raise EquationError(
            f"Subscripts must be a string, got {type(subscripts).__name__}"
        )
    compact = subscripts.replace(" ", "")
    if compact.count("->") > 1:
        raise EquationError(f"More than one '->' in {subscripts!r}")
    explicit = "->" in compact
    left, _, right = compact.partition("->")
    terms = left.split(",")
    if len(terms) != len(ranks):
        raise EquationError(
            f"{subscripts!r} names {len(terms)} operand(s) but "
            f"{len(ranks)} were given"
        )
    for term in terms + ([right] if explicit else []):
        _check_term(term, subscripts)

    used = set(compact) & set(_LETTERS)
    fresh = [letter for letter in _FRESH_ORDER if letter not in used]
    ellipsis_rank = 0
    expanded = []
    for term, rank in zip(terms, ranks):
        named = len(term.replace(_ELLIPSIS, ""))
        if _ELLIPSIS not in term:
            if named != rank:
                raise EquationError(
                    f"Operand {term!r} has {named} label(s) but rank {rank}"
                )
            expanded.append(term)
            continue
        covered = rank - named
        if covered < 0:
            raise EquationError(
                f"Operand {term!r} has more labels than its rank {rank}"
            )
        ellipsis_rank = max(ellipsis_rank, covered)
        expanded.append(term)
    if ellipsis_rank > len(fresh):
        raise EquationError(f"Too many broadcast dimensions in {subscripts!r}")
    # Broadcast axes are right-aligned across operands, as in NumPy: the last
    # axis under every ellipsis gets the same fresh letter.
    broadcast = "".join(fresh[:ellipsis_rank])
    inputs = tuple(
        _expand(term, rank, broadcast) for term, rank in zip(expanded, ranks)
    )

    if explicit:
        if _ELLIPSIS not in right and any(
            len(inp) > len(term.replace(_ELLIPSIS, ""))
            for inp, term in zip(inputs, terms)
        ):
            raise EquationError(
                f"Output {right!r} has no '...' for the broadcast dimensions"
            )
        output = _expand(right, None, broadcast)
        for label in output:
            if output.count(label) > 1:
                raise EquationError(
                    f"Output character {label!r} appears more than once"
                )
            if not any(label in inp for inp in inputs):
                raise EquationError(
                    f"Output character {label!r} did not appear in the input"
                )
    else:
        named = "".join(term.replace(_ELLIPSIS, "") for term in terms)
        singles = sorted(
            label for label in set(named) if named.count(label) == 1
        )
        output = broadcast + "".join(singles)
    return Equation(
        inputs=inputs,
        output=output,
        ellipsis_inputs=tuple(_ELLIPSIS in term for term in terms),
    )


def _check_term(term, subscripts):
    if term.count(_ELLIPSIS) > 1:
        raise EquationError(f"More than one '...' in operand {term!r}")
    bad = set(term.replace(_ELLIPSIS, "")) - set(_LETTERS)
    if bad:
        raise EquationError(
            f"Invalid character(s) {''.join(sorted(bad))!r} in {subscripts!r}"
        )


def _expand(term, rank, broadcast):
    """Replace the ellipsis of ``term`` by the trailing broadcast letters."""
    if _ELLIPSIS not in term:
        return term
    named = len(term.replace(_ELLIPSIS, ""))
    width = len(broadcast) if rank is None else rank - named
    letters = broadcast[len(broadcast) - width :] if width else ""
    return term.replace(_ELLIPSIS, letters)
