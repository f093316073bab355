"""Straightforward references for the tests: SSCL Eq.9 written out, CKA (Eq.8) of whole representations."""
import torch


def hsic1(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """SSCL Eq.9 as printed: zeroed diagonals, then tr(K~L~) + 1'K~1 1'L~1/((n-1)(n-2)) - 2/(n-2) 1'K~L~1."""
    n = K.shape[0]
    K, L = K.clone(), L.clone()
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    one = torch.ones(n, 1, dtype=K.dtype)
    return ((K @ L).trace() + (one.T @ K @ one) * (one.T @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one.T @ K @ L @ one)).squeeze() / (n * (n - 3))


def hsic_triple(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """HSIC(K,L), HSIC(K,K), HSIC(L,L) of a student ``[T, B, ...]`` (each sample's whole spike train, time kept)
    and a teacher ``[B, ...]`` representation, linear kernels."""
    X = torch.stack([student_map[:, i].flatten() for i in range(student_map.shape[1])]).double()
    Y = teacher_map.reshape(teacher_map.shape[0], -1).double()
    K, L = X @ X.T, Y @ Y.T
    return torch.stack([hsic1(K, L), hsic1(K, K), hsic1(L, L)])


def cka_of(terms: torch.Tensor) -> float:
    return (terms[0] / (terms[1] * terms[2]).sqrt()).item()
