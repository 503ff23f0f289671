"""Reading SERVICE_* keys from labels and env; tag lists."""

import pytest

from registrar.metadata import read_metadata, split_tags


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        ("a,b", ["a", "b"]),
        (r"a,b\,c", ["a", "b,c"]),
        (" a , ,b ", ["a", "b"]),
        ("", []),
        (r"x\y", [r"x\y"]),
        ("trailing,", ["trailing"]),
    ],
)
def test_split_tags(text: str, tags: list[str]) -> None:
    """Tags split on commas, a backslash-escaped comma stays, blanks are dropped."""
    assert split_tags(text) == tags


def test_label_beats_env_and_port_key_beats_general() -> None:
    """A label overrides the same env key; SERVICE_<port>_KEY overrides SERVICE_KEY for that port."""
    meta = read_metadata(
        {
            "Env": ["SERVICE_NAME=from-env", "SERVICE_80_TAGS=env80", "PATH=/bin"],
            "Labels": {"SERVICE_NAME": "from-label", "SERVICE_80_NAME": "eighty", "SERVICE_TAGS": "general"},
        }
    )
    assert meta.for_port("80")["name"].value == "eighty"
    assert meta.for_port("80")["name"].from_port
    assert meta.for_port("443")["name"].value == "from-label"
    assert meta.for_port("80")["tags"].value == "env80"
    assert meta.for_port("443")["tags"].value == "general"


def test_empty_value_counts_as_unset() -> None:
    """An empty label does not hide a non-empty env value."""
    meta = read_metadata({"Env": ["SERVICE_NAME=env"], "Labels": {"SERVICE_NAME": ""}})
    assert meta.for_port("80")["name"].value == "env"


def test_keys_are_lower_cased_and_sources_named() -> None:
    """Keys are lower-cased; each value remembers the label or env variable it came from."""
    meta = read_metadata({"Env": ["SERVICE_Check_HTTP=/h"], "Labels": {"SERVICE_8080_REGION": "eu"}})
    assert meta.general["check_http"].source == "env SERVICE_Check_HTTP"
    assert meta.for_port("8080")["region"].source == "label SERVICE_8080_REGION"


def test_the_forks_protocol_and_range_forms() -> None:
    """fayrus/registrator's forms: SERVICE_<port>_<proto>_<KEY> beats SERVICE_<port>_<KEY> for that protocol,
    a single port beats a range SERVICE_<N>-<M>_<KEY>, a range beats the general key; a label beats the env
    within each form."""
    meta = read_metadata(
        {
            "Env": ["SERVICE_53_udp_NAME=dns-env", "SERVICE_8000-8009_NAME=range-env"],
            "Labels": {
                "SERVICE_NAME": "general",
                "SERVICE_53_NAME": "dns",
                "SERVICE_53_UDP_NAME": "dns-udp",
                "SERVICE_8000-8009_IGNORE": "1",
                "SERVICE_8000-8009_NAME": "range",
                "SERVICE_8005_NAME": "single",
            },
        }
    )
    assert meta.for_port("53", "udp")["name"].value == "dns-udp"
    assert meta.for_port("53", "udp")["name"].source == "label SERVICE_53_UDP_NAME"
    assert meta.for_port("53", "tcp")["name"].value == "dns"
    assert meta.for_port("8000")["name"].value == "range" and "ignore" in meta.for_port("8009")
    assert meta.for_port("8005")["name"].value == "single" and meta.for_port("8005")["name"].from_port
    assert meta.for_port("8010")["name"].value == "general" and "ignore" not in meta.for_port("8010")
