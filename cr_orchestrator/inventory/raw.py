"""The shape of ``ansible-inventory --list --export`` output, and Ansible's variable merge.

``--export`` keeps each group's own variables (inventory file plus ``group_vars/``) and
each host's own variables (inventory file plus ``host_vars/``) apart. We need that: a
cluster's settings are the vars of one group, and a host may belong to several cluster
groups (N:1 DR), which a flattened ``--list`` would collapse into one value.

Host variables are then merged exactly as Ansible's ``sort_groups`` + ``combine_vars``
(default ``hash_behaviour=replace``) do: groups ordered by (depth, ansible_group_priority,
name), ``all`` first, the host's own vars last; a later definition replaces an earlier
one. The merge also records which group or host supplied each variable, so an error can
name the file at fault. ``tests/unit/test_inventory_load.py`` checks this merge against
the real ``ansible-inventory --list`` on the example inventories.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cr_orchestrator.inventory.values import Where


@dataclass(frozen=True)
class Group:
    name: str
    vars: dict
    hosts: tuple[str, ...]
    children: tuple[str, ...]
    depth: int = 0
    priority: int = 1


@dataclass
class RawInventory:
    """Groups and hosts of an exported inventory, with Ansible's precedence."""

    groups: dict[str, Group]
    host_vars: dict[str, dict]  # each host's own variables only
    parents: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def from_export(cls, data: dict) -> RawInventory:
        """Read the JSON of ``ansible-inventory --list --export``."""
        meta = data.get("_meta", {}) or {}
        host_vars = {h: dict(v or {}) for h, v in (meta.get("hostvars") or {}).items()}
        shells = {}
        for name, body in data.items():
            if name == "_meta" or not isinstance(body, dict):
                continue
            shells[name] = (dict(body.get("vars") or {}), tuple(body.get("hosts") or ()),
                            tuple(body.get("children") or ()))
            for host in shells[name][1]:
                host_vars.setdefault(host, {})
        for _, _, children in list(shells.values()):
            for child in children:
                shells.setdefault(child, ({}, (), ()))
        parents: dict[str, set[str]] = {name: set() for name in shells}
        for name, (_, _, children) in shells.items():
            for child in children:
                parents[child].add(name)
        depths = _depths(shells, parents)
        groups = {
            name: Group(name=name, vars=v, hosts=h, children=c, depth=depths[name],
                        priority=_priority(v))
            for name, (v, h, c) in shells.items()
        }
        return cls(groups=groups, host_vars=host_vars, parents=parents)

    def ancestors(self, group: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.parents.get(group, ()))
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self.parents.get(name, ()))
        return seen

    def groups_of(self, host: str) -> set[str]:
        """Every group the host is in, directly or through a child group (plus ``all``)."""
        direct = {g.name for g in self.groups.values() if host in g.hosts}
        result = set(direct)
        for name in direct:
            result |= self.ancestors(name)
        if "all" in self.groups:
            result.add("all")
        return result

    def hosts_of(self, group: str) -> set[str]:
        """Hosts of the group and of all its descendants (Ansible's ``get_hosts``)."""
        result: set[str] = set()
        todo, seen = [group], set()
        while todo:
            name = todo.pop()
            if name in seen or name not in self.groups:
                continue
            seen.add(name)
            result |= set(self.groups[name].hosts)
            todo.extend(self.groups[name].children)
        return result

    def ordered(self, names: set[str]) -> list[Group]:
        groups = [self.groups[n] for n in names if n in self.groups]
        return sorted(groups, key=lambda g: (g.depth, g.priority, g.name))

    def merged_host_vars(self, host: str) -> tuple[dict, dict[str, Where]]:
        """The host's variables as Ansible sees them, and where each one came from."""
        merged: dict = {}
        origin: dict[str, Where] = {}
        for group in self.ordered(self.groups_of(host)):
            for key, value in group.vars.items():
                merged[key] = value
                origin[key] = Where("group", group.name)
        for key, value in self.host_vars.get(host, {}).items():
            merged[key] = value
            origin[key] = Where("host", host)
        return merged, origin

    def merged_group_vars(self, group: str) -> tuple[dict, dict[str, Where]]:
        """A group's variables with those inherited from its ancestor groups."""
        merged: dict = {}
        origin: dict[str, Where] = {}
        for g in self.ordered(self.ancestors(group) | {group}):
            for key, value in g.vars.items():
                merged[key] = value
                origin[key] = Where("group", g.name)
        return merged, origin


def _priority(group_vars: dict) -> int:
    value = group_vars.get("ansible_group_priority", 1)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _depths(shells: dict, parents: dict[str, set[str]]) -> dict[str, int]:
    """Longest path from a root, as Ansible's ``Group.depth`` (``all`` is 0)."""
    depths: dict[str, int] = {}

    def depth(name: str, trail: frozenset) -> int:
        if name in depths:
            return depths[name]
        ups = [p for p in parents.get(name, ()) if p not in trail]
        value = 0 if not ups else 1 + max(depth(p, trail | {name}) for p in ups)
        depths[name] = value
        return value

    for name in shells:
        depth(name, frozenset())
    return depths
