"""module.toml parsing, module names, versions and version ranges."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from powernode.errors import Invalid
from powernode.modules.filters import FilterRules
from powernode.modules.spec import (
    ModuleRequirement,
    ModuleSpec,
    check_module_name,
    load_module_toml,
    module_from_json,
    module_from_mapping,
    parse_requirement,
    parse_specifier,
    parse_version,
    version_key,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "module.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> Invalid:
    path = write(tmp_path, text)
    with pytest.raises(Invalid) as caught:
        load_module_toml(path)
    assert str(path) in caught.value.detail
    return caught.value


def test_full_module_toml_loads(tmp_path: Path) -> None:
    """Every key of module.toml is read, normalized and validated."""
    path = write(
        tmp_path,
        """
name = "web"
version = "2.1.0rc1"
description = "Front web server"
extends = "docker >=24"
file_spec = '''
+ /etc/nginx/***
- *
'''
mask = ["/etc/nginx/secrets/*"]
package_spec = ["nginx (>= 1.22)", " ca-certificates ", "libc6(<<3)"]

[dependency_spec]
certs = ">=1.2,<2"
logging = "*"
tls = ""
""",
    )
    name, version, spec = load_module_toml(path)
    assert (name, version) == ("web", "2.1.0rc1")
    assert spec.description == "Front web server"
    assert spec.file_spec == "+ /etc/nginx/***\n- *\n"
    assert spec.mask == ["/etc/nginx/secrets/*"]
    assert spec.package_spec == ["nginx (>= 1.22)", "ca-certificates", "libc6 (<< 3)"]
    assert spec.dependency_spec == {"certs": ">=1.2,<2", "logging": "", "tls": ""}
    assert spec.extends == "docker >=24"
    assert spec.parent == ModuleRequirement("docker", parse_specifier(">=24"))
    assert [str(r) for r in spec.depends_on] == ["certs <2,>=1.2", "logging", "tls"]


def test_empty_module_toml_gives_defaults(tmp_path: Path) -> None:
    """A module.toml may be empty: no name, no version, an empty spec."""
    assert load_module_toml(write(tmp_path, "")) == (None, None, ModuleSpec())


def test_file_spec_as_list_equals_file_spec_as_string(tmp_path: Path) -> None:
    """A list of rules and a multi-line string give the same text."""
    _, _, listed = load_module_toml(write(tmp_path, 'file_spec = ["+ /etc/***", "- *"]'))
    _, _, text = load_module_toml(write(tmp_path, 'file_spec = "+ /etc/***\\n- *"'))
    assert listed.file_spec == text.file_spec == "+ /etc/***\n- *\n"


def test_file_spec_list_items_must_be_single_lines(tmp_path: Path) -> None:
    """A list item with a newline is rejected: one rule per item."""
    error = load_error(tmp_path, 'file_spec = ["+ /etc/***\\n- *"]')
    assert "key 'file_spec'" in error.detail
    assert "one rule per item" in error.detail


def test_file_spec_list_items_must_be_strings(tmp_path: Path) -> None:
    """A non-string rule is named by its position."""
    error = load_error(tmp_path, 'file_spec = ["+ /etc/***", 3]')
    assert "rule 2 is 3, not a string" in error.detail


def test_extends_without_space_is_normalized() -> None:
    """`docker>=24` and `docker >=24` mean the same parent."""
    assert ModuleSpec(extends="docker>=24").extends == "docker >=24"
    assert ModuleSpec(extends=" docker ").extends == "docker"


def test_unknown_key_lists_the_known_keys(tmp_path: Path) -> None:
    """A misspelt key is named and every known key is listed."""
    error = load_error(tmp_path, 'depends = ["a"]')
    assert "key 'depends': unknown key" in error.detail
    assert (
        "name, version, description, file_spec, mask, package_spec (or packages), "
        "dependency_spec (or dependencies), extends"
    ) in error.detail


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error reports tomllib's line and column."""
    error = load_error(tmp_path, 'name = "web"\nversion = = "1"\n')
    assert "TOML syntax error at line 2, column 11" in error.detail
    assert error.extra["line"] == 2
    assert error.extra["column"] == 11


def test_toml_error_at_end_of_file(tmp_path: Path) -> None:
    """An error tomllib places at the end of the document says so."""
    error = load_error(tmp_path, 'name = "web')
    assert "TOML syntax error at the end of the file" in error.detail


def test_unreadable_file_is_invalid(tmp_path: Path) -> None:
    """A missing module.toml is reported with its path."""
    path = tmp_path / "missing" / "module.toml"
    with pytest.raises(Invalid, match="cannot read the module file"):
        load_module_toml(path)


def test_version_must_be_a_string(tmp_path: Path) -> None:
    """`version = 1.0` (a float) asks for quotes."""
    error = load_error(tmp_path, "version = 1.0")
    assert "key 'version': must be a string, e.g. version = \"1.0\"" in error.detail


def test_version_must_be_pep440(tmp_path: Path) -> None:
    """A version that is not PEP 440 is rejected with examples."""
    error = load_error(tmp_path, 'version = "one"')
    assert "key 'version': 'one' is not a valid version" in error.detail


def test_name_must_be_valid(tmp_path: Path) -> None:
    """Upper case names are rejected with the naming rule."""
    error = load_error(tmp_path, 'name = "Web"')
    assert "key 'name': 'Web' is not a valid module name" in error.detail


def test_name_must_be_a_string(tmp_path: Path) -> None:
    """A non-string name asks for a string."""
    error = load_error(tmp_path, "name = 3")
    assert "key 'name': must be a string" in error.detail


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    """Every problem in the file is listed, each with its key."""
    error = load_error(tmp_path, 'name = "-x"\nmask = 3\ncolour = "red"')
    keys = [problem["key"] for problem in error.extra["errors"]]
    assert keys == ["name", "mask", "colour"]


def test_wrong_type_names_the_key_and_value(tmp_path: Path) -> None:
    """A value of the wrong type is named with what was given."""
    error = load_error(tmp_path, "description = 3")
    assert "key 'description': Input should be a valid string (got 3)" in error.detail


def test_list_item_of_wrong_type_names_its_index(tmp_path: Path) -> None:
    """A list item of the wrong type is located by index."""
    error = load_error(tmp_path, 'package_spec = ["nginx", 3]')
    assert "key 'package_spec[1]'" in error.detail


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("libc6 (>= 2.36), libssl3", "lists several packages"),
        ("nginx | apache2", "alternatives"),
        ("nginx (>= )", "is not a Debian package relation"),
        ("Nginx", "is not a valid Debian package name"),
        ("nginx:amd64", "architecture qualifier"),
        ("nginx [amd64]", "architecture qualifier"),
        ("nginx (> 1.0)", "'<' and '>' are obsolete"),
        ("nginx (=> 1.0)", "uses the operator '=>'"),
        ("nginx (>= a1)", "does not start with a digit"),
        ("", "empty"),
    ],
)
def test_bad_package_entries_are_rejected(tmp_path: Path, entry: str, problem: str) -> None:
    """Each malformed package relation gets a specific explanation."""
    error = load_error(tmp_path, f"package_spec = [{entry!r}]")
    assert "key 'package_spec': entry 1:" in error.detail
    assert problem in error.detail


def test_bad_dependency_range_suggests_a_fix(tmp_path: Path) -> None:
    """A bare version as a range suggests `==` or `>=`."""
    error = load_error(tmp_path, '[dependency_spec]\ncerts = "1.2"')
    assert "key 'dependency_spec': dependency 'certs': '1.2' is not a valid version range" in (
        error.detail
    )
    assert "'==1.2'" in error.detail


def test_bad_dependency_name(tmp_path: Path) -> None:
    """A dependency name must be a module name."""
    error = load_error(tmp_path, '[dependency_spec]\n"Certs!" = ">=1"')
    assert "dependency 'Certs!': 'Certs!' is not a valid module name" in error.detail


def test_bad_extends(tmp_path: Path) -> None:
    """`extends` must be a module name and an optional range."""
    error = load_error(tmp_path, 'extends = "docker 24"')
    assert "key 'extends': '24' is not a valid version range" in error.detail


def test_spec_is_immutable() -> None:
    """A spec cannot be changed after validation."""
    spec = ModuleSpec()
    with pytest.raises(ValueError, match="frozen"):
        spec.description = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("text", ["1.0", "24.0.7", "2.1.0rc1", "1!2.0.post1"])
def test_parse_version_accepts_pep440(text: str) -> None:
    """PEP 440 versions parse."""
    assert parse_version(text) == Version(text)


def test_parse_version_rejects_garbage() -> None:
    """A non-PEP 440 version gets examples of valid ones."""
    with pytest.raises(Invalid, match=r"'latest' is not a valid version: use a PEP 440"):
        parse_version("latest")


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        (">=1.2,<2", ["1.2", "1.9.9"], ["1.1", "2.0"]),
        (">= 1.2, < 2", ["1.5"], ["2.0"]),
        ("==1.*", ["1.0", "1.7"], ["2.0"]),
        ("~=1.4", ["1.4", "1.9"], ["2.0", "1.3"]),
        ("", ["0.1", "99"], []),
        ("*", ["0.1", "99"], []),
    ],
)
def test_parse_specifier(text: str, inside: list[str], outside: list[str]) -> None:
    """Ranges contain exactly the versions they should."""
    specifier = parse_specifier(text)
    assert all(Version(v) in specifier for v in inside)
    assert not any(Version(v) in specifier for v in outside)


def test_parse_specifier_rejects_space_separated_ranges() -> None:
    """Comparisons must be separated by commas."""
    with pytest.raises(Invalid, match="separated by commas"):
        parse_specifier(">=1 <2")


def test_parse_requirement() -> None:
    """A name alone means any version; a name and a range keep both."""
    assert parse_requirement("docker") == ModuleRequirement("docker", parse_specifier(""))
    assert parse_requirement("docker >=24,<26").specifier == parse_specifier(">=24,<26")


@pytest.mark.parametrize("name", ["a", "web", "web-proxy", "lib.x_2", "9" * 100])
def test_valid_module_names(name: str) -> None:
    """Names of 1 to 100 allowed characters pass."""
    assert check_module_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "Web", "a b", "9" * 101, "a/b"])
def test_invalid_module_names(name: str) -> None:
    """Names breaking the pattern are rejected."""
    with pytest.raises(Invalid, match="is not a valid module name"):
        check_module_name(name)


def test_older_key_names_are_accepted(tmp_path: Path) -> None:
    """`packages` and `[dependencies]`, the names before `package_spec` and `dependency_spec`,
    still load, into the same fields."""
    old = 'packages = ["nginx (>= 1.22)"]\n[dependencies]\ncerts = ">=1"\n'
    new = 'package_spec = ["nginx (>= 1.22)"]\n[dependency_spec]\ncerts = ">=1"\n'
    assert load_module_toml(write(tmp_path, old)) == load_module_toml(write(tmp_path, new))
    _, _, spec = load_module_toml(write(tmp_path, old))
    assert spec.package_spec == ["nginx (>= 1.22)"]
    assert spec.dependency_spec == {"certs": ">=1"}


def test_a_spec_is_recorded_under_the_canonical_key_names() -> None:
    """What the database keeps (and the API shows) uses `package_spec` and `dependency_spec`."""
    spec = ModuleSpec.model_validate({"packages": ["curl"], "dependencies": {"base": ""}})
    dumped = spec.model_dump(mode="json")
    assert dumped["package_spec"] == ["curl"]
    assert dumped["dependency_spec"] == {"base": ""}
    assert "packages" not in dumped
    assert ModuleSpec.from_stored(dumped) == spec


@pytest.mark.parametrize(
    ("text", "key", "old"),
    [
        ('package_spec = ["a"]\npackages = ["b"]', "package_spec", "packages"),
        ('[dependency_spec]\na = ""\n[dependencies]\nb = ""', "dependency_spec", "dependencies"),
    ],
)
def test_a_key_and_its_older_name_together_are_refused(
    tmp_path: Path, text: str, key: str, old: str
) -> None:
    """Giving both spellings of one key is ambiguous: refused, naming both."""
    error = load_error(tmp_path, text)
    assert f"keys '{key}' and '{old}' (its older name) are both given" in error.detail


def test_an_older_key_name_is_named_in_its_errors(tmp_path: Path) -> None:
    """A bad value under the older name is reported under the name the author wrote."""
    error = load_error(tmp_path, 'packages = ["Nginx"]')
    assert "key 'packages': entry 1:" in error.detail


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('file_spec = "+ /etc/***\\nx nope\\n"', "key 'file_spec': line 2: 'x nope': unknown rule"),
        (
            'file_spec = ["+ /etc/***", "- a", "y b"]',
            "key 'file_spec': line 3: 'y b': unknown rule",
        ),
        ('file_spec = "x bad"', "key 'file_spec': line 1: 'x bad'"),
    ],
)
def test_malformed_file_spec_is_refused_naming_the_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    """file_spec is parsed when the spec is read, not when the first file arrives."""
    error = load_error(tmp_path, text)
    assert problem in error.detail


def _rule_fails(rule: str) -> bool:
    try:
        FilterRules.parse(rule)
    except Invalid:
        return True
    return False


# Patterns the filter engine has refused at some point (what it refuses is its business).
MASK_CANDIDATES = ["[ab", "[[:nope:]]", "a*\\", "x" * 5000, "/usr/share/doc/"]


def test_a_mask_pattern_is_refused_exactly_when_its_rule_would_fail() -> None:
    """A mask pattern that cannot be the rule `- PATTERN` fails at import, naming the
    pattern, instead of failing every later preview of every template using the module."""
    refused = 0
    for pattern in MASK_CANDIDATES:
        data = {"mask": ["/usr/share/doc/", pattern]}
        if _rule_fails(f"- {pattern}"):
            refused += 1
            with pytest.raises(Invalid) as caught:
                module_from_mapping(data, source="module.toml")
            assert "key 'mask': pattern 2 (" in caught.value.detail
            assert "is not a valid pattern" in caught.value.detail
        else:
            assert module_from_mapping(data, source="module.toml")[2].mask[1] == pattern
    assert refused, "no candidate pattern is refused by the filter engine any more"


@pytest.mark.parametrize("pattern", ["a\rb", "a\nb", "a\x00b", "  "])
def test_mask_pattern_must_be_one_line(tmp_path: Path, pattern: str) -> None:
    """rsync ends a rule at CR, LF or NUL: a pattern holding one is refused, not cut short."""
    with pytest.raises(ValueError, match="must be one non-empty line"):
        ModuleSpec(mask=[pattern])


def test_stored_specs_are_not_parsed_again() -> None:
    """A spec read back from the database skips rule parsing (a preview loads every version);
    one recorded before rules were checked at import still loads."""
    spec = ModuleSpec.from_stored({"file_spec": "x bad\n"})
    assert spec.file_spec == "x bad\n"
    with pytest.raises(ValueError, match="line 1: 'x bad'"):
        ModuleSpec.model_validate({"file_spec": "x bad\n"})


def test_spec_from_json_fields() -> None:
    """The API's spec field: JSON with module.toml's keys, validated the same way."""
    name, version, spec = module_from_json(
        '{"version": "1.0", "file_spec": ["+ /etc/***", "- *"], "package_spec": ["nginx"]}',
        source="the spec parameter",
    )
    assert (name, version) == (None, "1.0")
    assert spec.file_spec == "+ /etc/***\n- *\n"
    assert (name, version, spec) == module_from_mapping(
        {"version": "1.0", "file_spec": "+ /etc/***\n- *", "packages": ["nginx"]}, source="x"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "the spec parameter is not valid JSON"),
        ("[1]", "must be a JSON object with module.toml's keys, not list"),
        ('{"file_spec": "x bad"}', "the spec parameter: key 'file_spec': line 1"),
    ],
)
def test_bad_spec_json_is_refused(text: str, problem: str) -> None:
    """Bad JSON, a non-object and an invalid key each get a clear message."""
    with pytest.raises(Invalid) as caught:
        module_from_json(text, source="the spec parameter")
    assert problem in caught.value.detail


@pytest.mark.parametrize(
    ("spellings", "key"),
    [
        (["1.1", "1.1.0", "1.1.0.0", "0!1.1", "01.1"], "1.1"),
        (["1", "1.0"], "1"),
        (["0", "0.0"], "0"),
        (["1.0a", "1.0a0", "1.0alpha0", "1.0.0-a0"], "1a0"),
        (["1.0-1", "1.0.post1", "1.0r1", "1.0.0-rev1"], "1.post1"),
        (["2!1.0.dev", "2!1.dev0"], "2!1.dev0"),
        (["1.0+ABC.01", "1.0+abc-1", "1.0.0+abc_1"], "1+abc.1"),
        (["1.0.1"], "1.0.1"),
    ],
)
def test_version_key_is_shared_by_every_spelling(spellings: list[str], key: str) -> None:
    """Every PEP 440 spelling of one version has the same key."""
    assert {version_key(text) for text in spellings} == {key}


_segment = st.integers(min_value=0, max_value=3)
_versions = st.builds(
    lambda epoch, release, pre, post, dev, local: (
        (f"{epoch}!" if epoch else "")
        + ".".join(str(r) for r in release)
        + (f"{pre[0]}{pre[1]}" if pre else "")
        + (f".post{post}" if post is not None else "")
        + (f".dev{dev}" if dev is not None else "")
        + (f"+{local}" if local else "")
    ),
    st.sampled_from([0, 0, 1]),
    st.lists(_segment, min_size=1, max_size=4),
    st.none() | st.tuples(st.sampled_from(["a", "b", "rc"]), _segment),
    st.none() | _segment,
    st.none() | _segment,
    st.sampled_from(["", "", "abc", "ABC.1", "abc.01", "1"]),
)


@given(_versions, _versions)
def test_version_keys_are_equal_exactly_when_versions_are(left: str, right: str) -> None:
    """The key is a faithful stand-in for PEP 440 equality (what the unique index relies on)."""
    assert (version_key(left) == version_key(right)) == (Version(left) == Version(right))
