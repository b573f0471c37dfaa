"""sparse_flow: continuous fields from sparse observations (Janny et al., ICLR 2024) on 2-D periodic
Navier-Stokes vorticity, and the flow-matching engine's probabilistic reconstruction."""
