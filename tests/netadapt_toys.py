"""A latency stand-in for NetAdapt tests: grows with every width, needs no table."""

from nas.latency.keys import decompose


def toy_latency(spec):
    """A MAdds-like cost that grows with every width, in 'ms'."""
    total = 0.0
    for key in decompose(spec, 224):
        if key.kind == "head":
            total += key.hw ** 2 * key.cin * key.exp + key.exp * max(key.hidden, 1) + key.hidden * key.cout
        else:
            expand = key.cin * key.exp if key.kind == "ir" and key.exp != key.cin else 0
            total += key.hw ** 2 * expand + key.out_hw ** 2 * key.exp * (key.kernel ** 2 + key.cout + 2 * key.se)
    return total / 1e6
