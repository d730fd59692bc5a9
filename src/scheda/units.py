"""Human-readable sizes and counts, one convention everywhere: binary units (MiB, GiB)."""

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def size(n: int | float | None) -> str:
    """Bytes as MiB under a GiB, else GiB with two decimals."""
    if n is None:
        return "unknown"
    if abs(n) >= GiB:
        return f"{n / GiB:,.2f} GiB"
    if abs(n) >= MiB:
        return f"{n / MiB:,.1f} MiB"
    return f"{n / KiB:,.1f} KiB"


def count(n: int | None) -> str:
    """A parameter count, exact and short: 134,515,008 (134.5M)."""
    if n is None:
        return "unknown"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n:,} ({n / scale:.1f}{suffix})"
    return f"{n:,}"
