"""Tables and figures of the kit (docs/design.md §7): numbers as CSV + Markdown, figures as PNG + PDF, all atomic.

Every table and figure is written by :mod:`moediffir.report.output`; each paper artefact has its own module
(``moediffir.report.benchmark`` for the CIR benchmark of §3.5, ``tables`` and ``figures`` for the evaluation,
``ablations`` for Tables 2-3 and Fig. 6, ``training_figures`` for the training curves, ``study_figures`` for the
notebooks' own checkpoints). ``moediffir report`` (:mod:`moediffir.report.regenerate`) redraws the evaluation's
from saved numbers. Nothing is imported here.
"""
