"""Secrets planted anywhere never survive redaction; ordinary names and code are left alone."""

from __future__ import annotations

import random
import string
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbmlops.redact import MIN_SECRET_LENGTH, REDACTED, Redactor, is_secret_name, redact_uri

SECRET = "sk-planted-7f3a9c2e1b"

SECRET_NAMES = [
    "api_key", "apiKey", "APIKey", "API_KEY", "APIKEY", "key", "ssh_key_path", "access_key_id",
    "aws_secret_access_key", "db.password", "DBPASSWORD", "auth-token", "HF_TOKEN", "hftoken",
    "token", "github_token", "refresh_token", "api_keys", "auth_tokens", "private_key",
    "client_secret", "secrets", "passwd", "pwd", "passphrase", "credentials", "creds", "cookie",
    "session_id", "sessionID", "session_key", "bearer", "signature", "dsn", "connection_string",
    "connStr", "JUPYTER_TOKEN", "Authorization", "my secret", "oauth_client",
]  # fmt: skip
ORDINARY_NAMES = [
    "tokenizer", "tokens", "max_tokens", "n_tokens", "num_tokens", "max_new_tokens",
    "special_tokens", "pad_token", "eos_token_id", "bos_token", "token_ids", "token_count",
    "keys", "dict_keys", "sort_key", "primary_key", "key_column", "key_points", "rng_key",
    "keyword", "monkey", "author", "learning_rate", "batch_size", "n_estimators", "model_name",
    "TOKENIZERS_PARALLELISM", "session_name", "connection_timeout", "path", "seed", "",
    "nbmlops.run_key", "nbmlops.cell_key", "mlflow.source.git.repoURL", "mlflow.user",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_are_flagged(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_names_are_not_flagged(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:tok123456@host/x.git", "https://***@host/x.git"),
        ("postgres://bob:pa@ss@db:5432/x", "postgres://***@db:5432/x"),
        ("at https://ghp_abc@github.com/o/r, s3://b/k", "at https://***@github.com/o/r, s3://b/k"),
        ("https://h/p?token=abc&x=1", "https://h/p?token=***&x=1"),
        ("GET /p?x=1&api_key=abc#top", "GET /p?x=1&api_key=***#top"),
        ("https://h/p?q=tokens&max_tokens=5", "https://h/p?q=tokens&max_tokens=5"),
        ("sqlite:///tmp/mlflow.db?mode=ro", "sqlite:///tmp/mlflow.db?mode=ro"),
        ("mail me at bob@example.com", "mail me at bob@example.com"),
        ("no uri here", "no uri here"),
    ],
)
def test_redact_uri(text: str, expected: str) -> None:
    assert redact_uri(text) == expected
    assert redact_uri(expected) == expected


def test_value_learned_from_source_is_scrubbed_from_any_text() -> None:
    redactor = Redactor()
    redactor.learn_source(f'import os\napi_key = "{SECRET}"\nmodel.fit(X)\n')
    traceback = (
        "Traceback (most recent call last):\n"
        f'  File "<cell>", line 3, in <module>\n    client = Client(key="{SECRET}")\n'
        f"AuthError: key {SECRET} rejected by https://api.example.com/v1?token={SECRET}\n"
    )
    scrubbed = redactor.scrub(traceback)
    assert SECRET not in scrubbed
    assert scrubbed.count(REDACTED) == 3
    assert "AuthError: key *** rejected by https://api.example.com/v1?token=***" in scrubbed


@pytest.mark.parametrize(
    "source",
    [
        'api_key = "{s}"',
        'token: str = "{s}"',
        'cfg.password = "{s}"',
        'os.environ["HF_TOKEN"] = "{s}"',
        'd["secret"] = "{s}"',
        'conn = connect(host="db", password="{s}")',
        'settings = {{"token": "{s}", "name": "run"}}',
        'user, passwd = "alice", "{s}"',
        'os.environ.setdefault("GITHUB_TOKEN", "{s}")',
        'def login(user, password="{s}"):\n    pass',
        'if secret == "{s}":\n    pass',
        'credentials = ("alice", "{s}")',
        'API_KEY = os.environ.get("API_KEY") or "{s}"',
        'password = (\n    "{s}"\n)',
        "%env FOO=1\n!pip install x\napi_key = '{s}'\nx = %time f()\nobj?",
        "for i in range(3):\n    %time f(i)\ntoken = '{s}'",
    ],
)
def test_secret_literals_are_learned_and_redacted(source: str) -> None:
    cell = source.format(s=SECRET)
    learner = Redactor()
    learner.learn_source(cell)
    assert learner.scrub(f"echo {SECRET}!") == "echo ***!"
    redacted = Redactor().redact_source(cell)
    assert SECRET not in redacted
    assert "'***'" in redacted


def test_redact_source_keeps_everything_else_byte_identical() -> None:
    source = (
        "%matplotlib inline\r\n"
        "import os  # ünïcode comment: é\r\n"
        "name = 'café'; api_key = \"s3cr3t-välue\"  # trailing\r\n"
        "tokenizer = AutoTokenizer.from_pretrained('bert-base-uncased')\r\n"
        "max_tokens = 512\r\n"
        'url = f"https://{host}/x"\r\n'
        "!ls -la\r\n"
    )
    expected = source.replace('"s3cr3t-välue"', "'***'")
    assert Redactor().redact_source(source) == expected


def test_redact_source_leaves_ordinary_code_identical() -> None:
    source = (
        "import pandas as pd\n\n"
        "def train(df: pd.DataFrame, lr: float = 0.1, model_name: str = 'baseline') -> None:\n"
        '    """Fit and log."""\n'
        "    tokens = df['text'].str.split()\n"
        "    print(f'{len(tokens)} rows', \"done\")\n"
        "    sort_key = 'timestamp'\n"
        "    return {'pad_token': '<pad>', 'keys': ['a', 'b']}\n"
    )
    redactor = Redactor()
    assert redactor.redact_source(source) == source
    assert redactor.scrub("timestamp baseline <pad>") == "timestamp baseline <pad>"


def test_unparseable_source_is_still_scrubbed() -> None:
    redactor = Redactor()
    redactor.add_value(SECRET)
    source = f"%%bash\necho {SECRET}\nif [ -z $X ]; then\n  curl https://u:p4ss@h/\nfi\n"
    assert redactor.redact_source(source) == (
        "%%bash\necho ***\nif [ -z $X ]; then\n  curl https://***@h/\nfi\n"
    )


def test_environment_secrets_are_learned() -> None:
    redactor = Redactor()
    environ = {"HF_TOKEN": SECRET, "PATH": "/usr/local/bin:/usr/bin", "PWD": "/home/me/project"}
    redactor.learn_environment(environ)
    log = f"downloading with {SECRET} from /usr/local/bin in /home/me/project"
    assert redactor.scrub(log) == "downloading with *** from /usr/local/bin in /home/me/project"


def test_namespace_secrets_are_learned_including_nested_mappings() -> None:
    redactor = Redactor()
    namespace: dict[str, object] = {
        "api_key": SECRET + "-a\n",
        "config": {"db": {"password": SECRET + "-b"}, "host": "localhost-db"},
        "creds": ["alice-the-user", SECRET + "-c"],
        "model_name": "resnet50-final",
        "token_count": "123456789",
        "n": 3,
    }
    redactor.learn_namespace(namespace)
    text = f"{SECRET}-a {SECRET}-b {SECRET}-c alice-the-user resnet50-final localhost-db 123456789"
    assert redactor.scrub(text) == "*** *** *** *** resnet50-final localhost-db 123456789"


def test_params_mapping_never_keeps_a_secret() -> None:
    redactor = Redactor()
    redactor.add_value(SECRET)
    params = {
        "api_key": "anything",
        "lr": "0.01",
        "tracking_uri": "https://user:pw123456@mlflow.example.com",
        "note": f"used {SECRET}",
    }
    assert redactor.redact_mapping(params) == {
        "api_key": REDACTED,
        "lr": "0.01",
        "tracking_uri": "https://***@mlflow.example.com",
        "note": "used ***",
    }


def test_short_and_non_string_values_are_ignored() -> None:
    redactor = Redactor()
    for value in ("a" * (MIN_SECRET_LENGTH - 1), 1234567, None, b"bytes-value"):
        redactor.add_value(value)
    assert redactor.scrub("aaaaa 1234567 bytes-value") == "aaaaa 1234567 bytes-value"


def test_longest_secret_wins_and_url_encoded_form_is_scrubbed() -> None:
    redactor = Redactor()
    redactor.add_value("abcdef")
    redactor.add_value("abcdefghij")
    redactor.add_value("p@ss/w0rd+")
    assert redactor.scrub("abcdefghij abcdef p%40ss%2Fw0rd%2B") == "*** *** ***"


@given(
    prefix=st.text(max_size=50),
    suffix=st.text(max_size=50),
    secret=st.text(alphabet=string.ascii_letters + "-_", min_size=MIN_SECRET_LENGTH),
)
def test_a_learned_secret_never_survives_scrubbing(prefix: str, suffix: str, secret: str) -> None:
    redactor = Redactor()
    redactor.learn_namespace({"token": secret})
    assert secret not in redactor.scrub(prefix + secret + suffix + secret)


def test_scrub_is_fast_on_a_megabyte_with_dozens_of_secrets() -> None:
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits
    secrets = ["".join(rng.choices(alphabet, k=rng.randint(8, 40))) for _ in range(50)]
    redactor = Redactor()
    for secret in secrets:
        redactor.add_value(secret)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 9))) for _ in range(500)]
    text = " ".join(rng.choices(words, k=200_000))[:1_000_000] + " ".join(secrets)
    started = time.perf_counter()
    scrubbed = redactor.scrub(text)
    assert time.perf_counter() - started < 2.0
    assert not any(secret in scrubbed for secret in secrets)


def test_concurrent_learning_and_scrubbing() -> None:
    redactor = Redactor()
    secrets = [f"secret-value-{index:04d}" for index in range(200)]
    errors: list[BaseException] = []

    def learn(chunk: list[str]) -> None:
        try:
            for secret in chunk:
                redactor.add_value(secret)
                redactor.scrub(secret)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=learn, args=(secrets[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert redactor.scrub(" ".join(secrets)) == " ".join([REDACTED] * len(secrets))


TOKENS = {
    "github": "ghp_" + "A1b2C3d4" * 5,
    "github fine-grained": "github_pat_" + "11ABCDEFG0" * 4,
    "openai": "sk-proj-" + "Zx9" * 12,
    "aws access key id": "AKIA" + "QWERTYUIOPASDFGH",
    "slack": "xoxb-1234567890-abcdefghij",
    "hugging face": "hf_" + "abcDEF123" * 4,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "pem private key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----",
}


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_well_known_token_shapes_are_redacted_under_any_name(kind: str) -> None:
    text = f"request failed for user 42: {TOKENS[kind]} was refused"
    assert Redactor().scrub(text) == f"request failed for user 42: {REDACTED} was refused"


def test_ordinary_text_that_resembles_no_token_is_kept() -> None:
    text = "sk-learn, AKIA-style, eyJ alone, hf_hub, ghp_short and xoxb-1 stay as they are"
    assert Redactor().scrub(text) == text


def test_secret_named_options_of_magic_lines_are_redacted_and_learned() -> None:
    redactor = Redactor()
    source = "%%track --tag api_key=Vq8rT0pSecret --tag team=ml-platform\nx = 1\nprint('Vq8rT0pSecret')"
    redacted = redactor.redact_source(source)
    assert "Vq8rT0pSecret" not in redacted
    assert "--tag api_key=*** --tag team=ml-platform" in redacted
    assert redactor.scrub("echo Vq8rT0pSecret") == f"echo {REDACTED}"
