"""From the command line's parsed options to a frozen Settings: the checks across options (usage errors),
and each value read once (addresses, tag templates, filters, Meta, the Consul endpoint and its TLS files)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import click

from registrar.container import FILTER_KINDS
from registrar.errors import ConfigError
from registrar.host_address import BadAddress, parse_spec, resolve
from registrar.metadata import parse_bool, split_tags
from registrar.model import OWNERSHIP_KEYS
from registrar.service_meta import MAX_META_KEYS, MAX_META_VALUE, META_KEY
from registrar.settings import Settings, parse_node_ttl, parse_registry_uri


def build_settings(params: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Settings from the parsed options and the environment; raises ConfigError."""
    if params["ttl_refresh"] and not params["ttl"]:
        raise click.UsageError("--ttl-refresh needs --ttl")
    if params["ttl"] and params["ttl_refresh"] >= params["ttl"]:
        raise click.UsageError("--ttl-refresh must be shorter than --ttl")
    ip, ip_from = _host_address("--ip", params["ip"], params["ipv6"])
    wan_ip, wan_ip_from = _host_address("--wan-ip", params.get("wan_ip", ""), params["ipv6"])
    instance = params.get("instance", "").strip()
    if instance and not INSTANCE_NAME.match(instance):
        raise click.UsageError(f"--instance {instance!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    # "" names the registrar that ran without --instance (a host that adopts one).
    forget_instances = tuple(dict.fromkeys(n.strip() for n in params.get("forget_instance", ())))
    if instance in forget_instances:
        raise click.UsageError(f"--forget-instance {instance}: that is this registrar's own instance")
    tags_template = _tags_template(params["tags"], params.get("tags_http", False))
    catalog_uri, catalog = _catalog(params.get("catalog"), params["registry_uri"])
    try:
        node_ttl = parse_node_ttl(params.get("node_ttl") or "30s")
    except ValueError as e:
        raise click.UsageError(f"--node-ttl {params.get('node_ttl')!r}: {e}") from None
    if catalog:
        _catalog_needs(params, ip)
    elif params.get("catalog_checks", "registrar") != "registrar":
        raise click.UsageError("--catalog-checks: only with --catalog (an agent runs the checks otherwise)")
    consul = parse_registry_uri(catalog_uri or params["registry_uri"], environ)
    for label, path in (
        ("CONSUL_CACERT", consul.ca_file),
        ("CONSUL_CLIENT_CERT", consul.cert_file),
        ("CONSUL_CLIENT_KEY", consul.key_file),
    ):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{label}: cannot read {path}")
    if consul.cert_file and not consul.key_file:
        raise ConfigError("CONSUL_CLIENT_CERT is set but CONSUL_CLIENT_KEY is not")
    return Settings(
        hostname=params["hostname"],
        ip=ip,
        internal=params["internal"],
        explicit=params["explicit"],
        tags=() if tags_template else tuple(split_tags(params["tags"])),
        tags_template=tags_template,
        tags_http=params.get("tags_http", False),
        resync=params["resync"],
        cleanup=params["cleanup"],
        deregister=params["deregister"],
        retry_attempts=params["retry_attempts"],
        retry_interval_ms=params["retry_interval"],
        ttl=params["ttl"],
        ttl_refresh=params["ttl_refresh"],
        use_ip_from_label=params["use_ip_from_label"],
        allow_script_checks=params["allow_script_checks"],
        docker_health=params["docker_health"] == "on",
        exec_checks=params["exec_checks"] == "on",
        ipv6=params["ipv6"],
        drain_on_stop=params["drain_on_stop"],
        network=params["network"],
        docker_host=params["docker_host"],
        consul=consul,
        log_format=params["log_format"],
        log_level=params["log_level"],
        metrics_addr=params.get("metrics_addr", ""),
        forget_hosts=tuple(dict.fromkeys(n for n in params.get("forget_host", ()) if n)),
        ip_from=ip_from,
        wan_ip=wan_ip,
        wan_ip_from=wan_ip_from,
        instance=instance,
        forget_instances=forget_instances,
        filters=tuple(_filter(text) for text in params.get("filter", ())),
        meta=_meta(params.get("meta", ())),
        catalog=catalog,
        node_ttl=node_ttl,
        catalog_checks=params.get("catalog_checks") or "registrar",
    )


INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _catalog(value: str | None, registry_uri: str | None) -> tuple[str, bool]:
    """``--catalog [URI]``: (the Consul URI it names, "" for REGISTRY_URI's; whether catalog mode is on). Bare,
    or a true word (``REGISTRAR_CATALOG=true``): on, at REGISTRY_URI's endpoint; a false word: off."""
    text = (value or "").strip()
    on = parse_bool(text) if text else False
    if on is not None:
        return "", on
    if "://" not in text:
        raise click.UsageError(
            f"--catalog {text!r} is not a Consul URI (consul://HOST:PORT, consul-tls://HOST:PORT, "
            "consul-unix:///path); a bare --catalog goes last, or write --catalog=true"
        )
    if registry_uri and registry_uri != text:
        raise click.UsageError(f"--catalog {text} and REGISTRY_URI {registry_uri} name two Consul endpoints: give one")
    return text, True


def _catalog_needs(params: Mapping[str, Any], ip: str) -> None:
    """What ``--catalog`` needs and refuses, as usage errors."""
    if not ip:
        raise click.UsageError(
            "--catalog needs --ip: the address of this host's catalog node (no agent on this host gives one)"
        )
    if params["allow_script_checks"]:
        raise click.UsageError("--allow-script-checks: a Consul agent runs script checks, and --catalog has none")
    if params.get("forget_host"):
        raise click.UsageError(
            "--forget-host with --catalog: a renamed host's services are on its own catalog node (not yet supported)"
        )


def _host_address(flag: str, text: str, ipv6: bool) -> tuple[str, str]:
    """``--ip``/``--wan-ip``: (the address now, the value as given when it names an interface or a range).

    Not an address, an interface name or a range: a usage error; an interface or range that gives no
    address now: a configuration error (exit 3)."""
    if not text.strip():
        return "", ""
    try:
        spec = parse_spec(text)
    except BadAddress as e:
        raise click.UsageError(f"{flag}: {e}") from None
    try:
        address = resolve(spec, ipv6)
    except BadAddress as e:
        raise ConfigError(f"{flag} {e}") from None
    return address, spec.text if spec.dynamic else ""


def _tags_template(text: str, http: bool) -> str:
    """``--tags`` when it is a Go template (holds ``{{``), parsed once here: one that does not parse is a
    usage error; "" for a plain tag list (the template engine is not even imported then)."""
    if "{{" not in text:
        return ""
    from registrar.tag_template import TemplateError, template

    try:
        template(text, http)
    except TemplateError as e:
        raise click.UsageError(f"--tags: not a valid template: {e}") from None
    return text


def _filter(text: str) -> tuple[str, str]:
    """One ``--filter KIND=VALUE``; raises a usage error naming it."""
    kind, _, value = text.partition("=")
    kind = kind.strip().lower()
    if kind not in FILTER_KINDS or not value or (kind == "label" and not value.partition("=")[0]):
        raise click.UsageError(f"--filter {text!r}: use label=KEY, label=KEY=VALUE, name=REGEX or network=NAME")
    if kind == "name":
        try:
            re.compile(value)
        except re.error as e:
            raise click.UsageError(f"--filter {text!r}: not a regular expression ({e})") from None
    return kind, value


def _meta(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--meta KEY=VALUE`` pairs; a key or value Consul would refuse is a configuration error (exit 3)."""
    out: dict[str, str] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        key = key.lower()  # as SERVICE_<KEY> becomes Meta, so that the container's own key beats it
        if not sep or not META_KEY.match(key) or key.startswith("consul-"):
            raise ConfigError(f"--meta {text!r}: use KEY=VALUE, the key of letters, digits, _ and - (not consul-*)")
        if key in OWNERSHIP_KEYS:
            raise ConfigError(f"--meta {text!r}: {key} is registrar's own (ownership Meta)")
        if len(value.encode()) > MAX_META_VALUE:
            raise ConfigError(f"--meta {key}: the value is longer than Consul's {MAX_META_VALUE} bytes")
        out[key] = value
    if len(out) > MAX_META_KEYS - len(OWNERSHIP_KEYS):
        raise ConfigError(f"--meta: {len(out)} keys; Consul takes {MAX_META_KEYS} in all, registrar's own included")
    return tuple(out.items())
