"""cnirun.bandwidth: `--bandwidth`'s grammar (tc's units), the bounds the bandwidth plugin can
hold, the default bursts, and the CNI capability object it becomes (issue 16)."""

from __future__ import annotations

import pytest

from cnirun.bandwidth import (
    Bandwidth,
    default_burst,
    format_rate,
    format_size,
    parse_bandwidth,
    parse_rate,
    parse_size,
)
from cnirun.errors import UsageError


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("8kbit", 8_000),
        ("500kbit", 500_000),
        ("10mbit", 10_000_000),
        ("1.5gbit", 1_500_000_000),
        ("10MBit", 10_000_000),
        ("800kbps", 6_400_000),  # bytes per second, as tc reads bps
        ("2mbps", 16_000_000),
        ("1mibit", 1_048_576),
        ("1kibps", 8_192),
        ("32gbit", 32_000_000_000),
        ("125000bit", 125_000),
        (".5mbit", 500_000),
    ],
)
def test_rates_are_bits_per_second(text: str, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize(
    ("text", "size"),
    [("64kb", 65_536), ("64k", 65_536), ("1mb", 1_048_576), ("2048b", 2048), ("1gb", 2**30)],
)
def test_sizes_are_bytes_counted_as_tc_does(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_the_capability_is_in_bits_with_default_bursts() -> None:
    limits = parse_bandwidth("ingress=8mbit,egress=1gbit")
    assert limits.to_cni() == {
        "ingressRate": 8_000_000,
        "ingressBurst": 64 * 1024 * 8,  # 10 ms would be 10 kB: the 64kb floor
        "egressRate": 1_000_000_000,
        "egressBurst": 1_250_304 * 8,  # 10 ms of it, rounded up to whole kb
    }
    assert default_burst(1_000_000_000) == 1_250_304


def test_one_direction_alone_and_explicit_bursts() -> None:
    assert parse_bandwidth("egress=2mbit,egress-burst=16kb").to_cni() == {
        "egressRate": 2_000_000,
        "egressBurst": 16 * 1024 * 8,
    }
    assert parse_bandwidth("ingress-burst=1mb,ingress=100mbit").to_cni() == {
        "ingressRate": 100_000_000,
        "ingressBurst": 2**20 * 8,
    }


def test_repeated_flags_add_directions_and_refuse_a_second_limit() -> None:
    first = parse_bandwidth("ingress=1mbit")
    both = parse_bandwidth("egress=2mbit", first)
    assert (both.ingress_rate, both.egress_rate) == (1_000_000, 2_000_000)
    with pytest.raises(UsageError, match=r"ingress is limited by an earlier --bandwidth$"):
        parse_bandwidth("ingress=3mbit", both)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "'' is not one of ingress=, egress=, ingress-burst=, egress-burst="),
        ("ingress", "'ingress' is not one of ingress=, egress="),
        ("up=1mbit", "'up=1mbit' is not one of"),
        ("ingress=8", "'8' needs a unit (e.g. 10mbit, 500kbit, 2mbps)"),
        ("ingress=fast", "'fast' is not a rate"),
        ("ingress=-1mbit", "'-1mbit' is not a rate"),
        ("ingress=10mbyte", "unknown rate unit 'mbyte' in '10mbyte' (use bit, kbit,"),
        ("egress=1kbit", "rate '1kbit' is outside 8kbit-32gbit"),
        ("egress=40gbit", "rate '40gbit' is outside 8kbit-32gbit"),
        ("ingress=1mbit,ingress-burst=1kb", "burst '1kb' is outside 2kb-1gb"),
        ("ingress=1mbit,ingress-burst=64kbit", "unknown size unit 'kbit'"),
        ("ingress=1mbit,ingress=2mbit", "ingress= is given twice"),
        ("egress-burst=64kb", "egress-burst= needs egress=RATE"),
        ("ingress=8kbit,ingress-burst=1mb", "ingress-burst=1mb takes over 250 s at 8kbit"),
    ],
)
def test_bad_values_name_the_flag_and_the_bad_part(value: str, reason: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_bandwidth(value)
    message = str(info.value)
    assert message.startswith(f"invalid --bandwidth {value!r}: {reason}"), message
    assert "\n" not in message


def test_the_text_round_trips_and_reads_back_a_record() -> None:
    limits = parse_bandwidth("ingress=1500kbit,egress=8mbit,egress-burst=100kb")
    assert limits.text() == "ingress=1500kbit,ingress-burst=64kb,egress=8mbit,egress-burst=100kb"
    assert parse_bandwidth(limits.text()) == limits
    assert Bandwidth.from_cni(limits.to_cni()) == limits
    assert Bandwidth.from_cni({"ingressRate": "8"}) is None
    assert Bandwidth.from_cni(None) is None
    assert (format_rate(1234), format_size(1500)) == ("1234bit", "1500b")
