"""raft: Transformers with learnable rational activation functions (Fang et al., 2023)."""

__version__ = "0.1.0"
