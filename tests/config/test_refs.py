"""Secret references: every accepted spelling, every rejection, and round-trips through the canonical name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config.refs import HiddenReference, SecretRef, hidden_reason, parse_ref
from agent.errors import ConfigError, InvalidReference

DEFAULT = "default-proj"

FORMS = [
    # full names, global
    ("projects/my-proj/secrets/db/versions/3", "projects/my-proj/secrets/db/versions/3"),
    ("projects/my-proj/secrets/db/versions/latest", "projects/my-proj/secrets/db/versions/latest"),
    ("projects/my-proj/secrets/db/versions/current", "projects/my-proj/secrets/db/versions/current"),
    ("projects/my-proj/secrets/db", "projects/my-proj/secrets/db/versions/latest"),
    ("projects/123456789012/secrets/db/versions/2", "projects/123456789012/secrets/db/versions/2"),
    # full names, regional
    (
        "projects/my-proj/locations/us-central1/secrets/db/versions/7",
        "projects/my-proj/locations/us-central1/secrets/db/versions/7",
    ),
    (
        "projects/my-proj/locations/europe-west1/secrets/db",
        "projects/my-proj/locations/europe-west1/secrets/db/versions/latest",
    ),
    # short forms take the default project
    ("db", f"projects/{DEFAULT}/secrets/db/versions/latest"),
    ("db@4", f"projects/{DEFAULT}/secrets/db/versions/4"),
    ("db#4", f"projects/{DEFAULT}/secrets/db/versions/4"),
    ("db@blue", f"projects/{DEFAULT}/secrets/db/versions/blue"),
    ("db#latest", f"projects/{DEFAULT}/secrets/db/versions/latest"),
    ("Mixed_Case-id_9", f"projects/{DEFAULT}/secrets/Mixed_Case-id_9/versions/latest"),
    ("projects", f"projects/{DEFAULT}/secrets/projects/versions/latest"),  # a secret may be called that
    # sm:// URLs
    ("sm://other-proj/db", "projects/other-proj/secrets/db/versions/latest"),
    ("sm://other-proj/db#12", "projects/other-proj/secrets/db/versions/12"),
    ("sm://other-proj/db@green", "projects/other-proj/secrets/db/versions/green"),
    # boundaries of the service's rules
    ("a" * 255, f"projects/{DEFAULT}/secrets/{'a' * 255}/versions/latest"),
    ("db@" + "a" * 63, f"projects/{DEFAULT}/secrets/db/versions/{'a' * 63}"),
    ("projects/abcdef/secrets/db", "projects/abcdef/secrets/db/versions/latest"),
    ("projects/" + "a" * 30 + "/secrets/db", f"projects/{'a' * 30}/secrets/db/versions/latest"),
]


@pytest.mark.parametrize(("text", "canonical"), FORMS)
def test_every_form_parses_to_its_canonical_name(text: str, canonical: str) -> None:
    ref = parse_ref(text, DEFAULT)
    assert str(ref) == canonical
    assert ref.version_name == canonical
    assert ref.secret_name == canonical.rsplit("/versions/", 1)[0]
    assert parse_ref(canonical) == ref


def test_parts_of_a_regional_reference() -> None:
    ref = parse_ref("projects/my-proj/locations/us-east4/secrets/api/versions/9")
    assert ref == SecretRef(project="my-proj", secret="api", version="9", location="us-east4")
    assert ref.secret_name == "projects/my-proj/locations/us-east4/secrets/api"


def test_full_names_ignore_the_default_project() -> None:
    assert parse_ref("projects/my-proj/secrets/db", DEFAULT).project == "my-proj"


ERRORS = [
    ("", "reference is empty"),
    (" db", "whitespace"),
    ("db ", "whitespace"),
    ("projects/p/secrets/bad!", "secret id may only contain letters, digits, '-' and '_'"),
    ("projects/my-proj/secrets/bad!", "secret id may only contain letters, digits, '-' and '_'"),
    ("projects/p/secrets/db", "project id 'p' is invalid"),
    ("projects/My-Proj/secrets/db", "project id 'My-Proj' is invalid"),
    ("projects/my-proj-/secrets/db", "project id 'my-proj-' is invalid"),
    ("projects/1my-proj/secrets/db", "project id '1my-proj' is invalid"),
    ("projects/" + "a" * 31 + "/secrets/db", "is invalid"),
    ("projects//secrets/db", "project id is empty"),
    ("projects/my-proj/secrets/", "secret id is empty"),
    ("projects/my-proj/secrets/db/versions/", "version is empty"),
    ("projects/my-proj/secrets/db/versions/0", "version 0 does not exist"),
    ("projects/my-proj/secrets/db/versions/007", "leading zeros; write '7'"),
    ("projects/my-proj/locations/US/secrets/db", "location 'US' is invalid"),
    ("projects/my-proj/locations//secrets/db", "location is empty"),
    ("projects/my-proj/secrets/db/versions/1/extra", "not a secret or secret version name"),
    ("projects/my-proj/keys/db", "not a secret or secret version name"),
    ("projects/my-proj/secrets/db/", "not a secret or secret version name"),
    ("a" * 256, "secret id is 256 characters long, at most 255"),
    ("my secret", "secret id may only contain"),
    ("db@", "version after '@' is empty"),
    ("db#", "version after '#' is empty"),
    ("@3", "secret id is empty"),
    ("db@0", "version 0 does not exist"),
    ("db@01", "leading zeros"),
    ("db@-1", "must start with a letter"),
    ("db@1abc", "version alias '1abc' must start with a letter"),
    ("db@_x", "must start with a letter"),
    ("db@a.b", "may only contain letters, digits, '-' and '_'"),
    ("db@v1#v2", "may only contain letters, digits, '-' and '_'"),
    ("db@" + "a" * 64, "version alias is 64 characters long, at most 63"),
    ("db@Latest", "reserved name, not a valid alias; did you mean 'latest'?"),
    ("db@LATEST", "reserved name"),
    ("db@new", "'new' is a reserved name"),
    ("db@NEW", "reserved name"),
    ("team/db", "unrecognised form"),
    ("sm://my-proj", "expected sm://PROJECT/SECRET"),
    ("sm://my-proj/db/3", "expected sm://PROJECT/SECRET"),
    ("sm://p/db", "project id 'p' is invalid"),
    ("sm://my-proj/db#", "version after '#' is empty"),
    ("sm://my-proj/bad!", "secret id may only contain"),
]


@pytest.mark.parametrize(("text", "fragment"), ERRORS)
def test_every_error_names_the_reference_and_the_problem(text: str, fragment: str) -> None:
    """Quoted when reference-shaped; otherwise (a space, a '!') described, its problem still named."""
    with pytest.raises(InvalidReference) as caught:
        parse_ref(text, DEFAULT)
    message = str(caught.value)
    if hidden_reason(text) is None:
        assert message.startswith(f"secret reference {text!r}: ")
        assert caught.value.reference == text
    else:
        assert message.startswith(f"secret reference not shown ({len(text)} characters, ")
        assert text not in message
        assert isinstance(caught.value, HiddenReference)
    assert fragment in message


def test_every_problem_of_a_reference_is_reported_at_once() -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_ref("projects/p/secrets/bad!/versions/0")
    message = str(caught.value)
    assert "project id 'p'" in message
    assert "secret id may only contain" in message
    assert "version 0 does not exist" in message


@pytest.mark.parametrize("text", ["db", "db@3", "db#blue"])
def test_short_forms_without_a_default_project_say_how_to_set_one(text: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_ref(text)
    assert str(caught.value).startswith(f"secret reference {text!r}: ")
    assert "default project" in str(caught.value)
    assert "SECRETS_AGENT_PROJECT" in str(caught.value)


def test_an_invalid_default_project_is_reported() -> None:
    with pytest.raises(InvalidReference, match="default project id 'X' is invalid"):
        parse_ref("db", "X")


def test_an_invalid_reference_is_a_config_error() -> None:
    # The CLI turns ConfigError into exit code 2 with one line per problem.
    with pytest.raises(ConfigError) as caught:
        parse_ref("db@0", DEFAULT)
    assert [str(p) for p in caught.value.problems] == [
        "secret reference 'db@0': version 0 does not exist: versions are numbered from 1"
    ]


# --- property: every textual form of a valid reference parses to the same SecretRef -------------------------

_project_ids = st.from_regex(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", fullmatch=True)
_project_numbers = st.from_regex(r"[1-9][0-9]{0,15}", fullmatch=True)
_locations = st.from_regex(r"[a-z](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_secret_ids = st.from_regex(r"[A-Za-z0-9_-]{1,255}", fullmatch=True)
_aliases = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,62}", fullmatch=True).filter(
    lambda alias: alias.lower() not in ("latest", "new")
)
_versions = st.one_of(st.just("latest"), st.integers(min_value=1, max_value=10**12).map(str), _aliases)


def _textual_forms(ref: SecretRef) -> list[tuple[str, str | None]]:
    """(text, default project) pairs that must all mean ``ref``."""
    prefix = ref.secret_name
    forms: list[tuple[str, str | None]] = [(f"{prefix}/versions/{ref.version}", None)]
    if ref.version == "latest":
        forms.append((prefix, None))
    if ref.location is None:
        forms += [
            (f"sm://{ref.project}/{ref.secret}#{ref.version}", None),
            (f"sm://{ref.project}/{ref.secret}@{ref.version}", None),
            (f"{ref.secret}@{ref.version}", ref.project),
            (f"{ref.secret}#{ref.version}", ref.project),
        ]
        if ref.version == "latest":
            forms += [(f"sm://{ref.project}/{ref.secret}", None), (ref.secret, ref.project)]
    return forms


@given(
    project=st.one_of(_project_ids, _project_numbers),
    location=st.one_of(st.none(), _locations),
    secret=_secret_ids,
    version=_versions,
)
def test_every_form_round_trips_through_the_canonical_name(
    project: str, location: str | None, secret: str, version: str
) -> None:
    expected = SecretRef(project=project, secret=secret, version=version, location=location)
    for text, default_project in _textual_forms(expected):
        ref = parse_ref(text, default_project)
        assert ref == expected, text
        assert parse_ref(str(ref)) == ref


PASTED_VALUES = [
    "S3cr3tP@ssw0rd!xyz",  # a password: characters no reference has, its "version" quoted before
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",  # an API key: reference characters, a long random-looking word
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # a hex token
    "correct horse battery staple",  # a passphrase
    "projects/my-proj/secrets/db/versions/hunter2!",  # a password pasted into the version
    "x" * 400,
]


@pytest.mark.parametrize("pasted", PASTED_VALUES)
def test_a_value_pasted_as_a_reference_is_never_quoted(pasted: str) -> None:
    # Without a default project: an API key is a valid secret id, and a valid reference raises nothing.
    with pytest.raises(HiddenReference) as caught:
        parse_ref(pasted)
    message = str(caught.value)
    assert message.startswith(f"secret reference not shown ({len(pasted)} characters")
    # Not the value, and none of its parts (the old message quoted "version alias 'ssw0rd!xyz'").
    for part in {pasted, *pasted.replace("@", " ").replace("/", " ").split()}:
        assert (
            len(part) <= 1
            or part in ("projects", "secrets", "versions", "my-proj", "db")
            or (part not in message)
        ), (part, message)


@pytest.mark.parametrize(
    "text", ["db-password", "projects/123456789012/secrets/db", "stripe_api_key_2024", "sm://my-proj/db#3"]
)
def test_reference_shaped_text_may_be_quoted(text: str) -> None:
    assert hidden_reason(text) is None
