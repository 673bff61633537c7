"""Integrations with training frameworks, each an optional extra that ``import edgescope`` never
imports: :mod:`edgescope.integrations.flower` (Flower federated learning, ``edgescope[flower]``).
"""
