"""Training: SFT demonstrator data, supervised warm start and SEPO-GRPO (SPEC §5)."""
