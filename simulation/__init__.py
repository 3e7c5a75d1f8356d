"""Simulated patients with known truth: fact sheets, the notes and evaluation files rendered from them.

Not part of the method (clinical_distil): the bundled samples are made here, and a run on simulated
notes can be checked against what is true of each patient.
"""
