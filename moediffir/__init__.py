"""MoE-DiffIR reproduction kit."""
