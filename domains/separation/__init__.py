"""Language-queried source separation (FlowSep) on rendered Bach chorales."""
