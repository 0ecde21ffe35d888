""" The threat model: perturbation budgets (``budget``: parsing ``8/255``, checking, writing them as RobustBench
does) and the projected-gradient primitives shared by adversarial training and the audit (``pgd``). Import the
submodule you need: ``budget`` is light (no torch), ``pgd`` imports torch. """
