"""The einsum algebra: parse an equation (``equation.py``), decide the
MatMul as a pure function of strings and shapes (``plan.py``), build it on
a view of the kernel (``build.py``). The einsum part
(``parts/ops/einsum.py``) puts the result in stock's place."""
