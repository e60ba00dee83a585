"""Recipes: checked completely before any work, with errors that name the file, the line and the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import augkit.registry as registry_module
from augkit.augment import Augmenter
from augkit.errors import ParamError
from augkit.hookspecs import hookimpl
from augkit.params import AUGMENTER_REF
from augkit.recipe import apply_set, load_recipe, parse_value
from augkit.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """
[data]
source = "demo"
image_size = 16

[[augment]]
name = "vanilla"
[augment.params]
steps = 2

[[augment]]
name = "classical"
amount = 0.5

[[augment]]
id = "ac"
name = "acgan"
amount = { per_class = 3 }
params = { base = "vanilla", steps = 2 }

[evaluate]
model = "test_resnet"
arms = ["classical", "classical+ac"]
epochs = 1
"""


def test_a_good_recipe_resolves_steps_dependencies_and_arms(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert [s.id for s in recipe.steps] == ["vanilla", "classical", "ac"]
    assert recipe.step("ac").refs == {"base": "vanilla"}
    assert recipe.step("vanilla").amount is None
    assert recipe.step("ac").amount.per_class == 3
    assert recipe.evaluate.arms == ("baseline", "classical", "classical+ac")  # the baseline is always there
    assert recipe.arm_steps("classical+ac") == ["classical", "ac"]
    assert recipe.evaluate.config.model == "test_resnet"
    assert recipe.data.split == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert recipe.out == Path("runs/r")
    assert recipe.evaluate.versus == ()
    compared = load_recipe(write(tmp_path, GOOD + 'versus = ["classical+ac=classical"]\n'))
    assert compared.evaluate.versus == ("classical+ac=classical",)
    assert "versus ['classical+ac=classical']" in "\n".join(compared.plan())


def test_a_step_for_named_classes_is_planned_and_recorded_as_such(tmp_path):
    text = GOOD.replace("amount = { per_class = 3 }", 'amount = { per_class = 3, classes = ["basophil", "ig"] }')
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.step("ac").amount.classes == ("basophil", "ig")
    assert "step ac: acgan, 3 per class, only in basophil, ig" in "\n".join(recipe.plan())
    assert recipe.resolved["augment"][2]["amount"]["classes"] == ("basophil", "ig")
    (tmp_path / "plain").mkdir()
    plain = load_recipe(write(tmp_path / "plain", GOOD))  # same name, no classes
    assert plain.resolved["name"] == recipe.resolved["name"] and plain.fingerprint() != recipe.fingerprint()


def test_dependencies_run_first_whatever_the_order_in_the_file(tmp_path):
    text = GOOD.replace('[[augment]]\nname = "vanilla"\n[augment.params]\nsteps = 2\n', "") + \
        '\n[[augment]]\nname = "vanilla"\nparams = { steps = 2 }\n'
    recipe = load_recipe(write(tmp_path, text))
    assert [s.id for s in recipe.steps][-1] == "vanilla"
    order = [s.id for s in recipe.order()]
    assert order.index("vanilla") < order.index("ac")


def test_shipped_recipes_are_valid():
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        recipe = load_recipe(path)
        assert recipe.evaluate is not None, path
        assert recipe.data.source == "demo", f"{path}: shipped recipes run on the demo data by default"


@pytest.mark.parametrize("text, expected", [
    ("[data]\nimage_sise = 32\n", r"r\.toml, line 2: \[data\]: unknown key 'image_sise'; did you mean 'image_size'"),
    ("[data]\nsource = \"demo\"\nimage_size = \"big\"\n", r"line 3: \[data\]: key 'image_size' must be an integer, got 'big'"),
    ("[dta]\n", r"r\.toml: \[dta\]: unknown table; did you mean 'data'"),
    ("[[augment]]\nname = \"clasical\"\namount = 0.5\n", r"line 2: .*unknown augmenter 'clasical'; did you mean 'classical'"),
    ("[[augment]]\namount = 0.5\n", r"missing 'name'"),
    ("[data]\nsource = \"no/such/folder\"\n", r"line 2: \[data\]: source '.*no/such/folder': no such file or folder"),
    ("[[augment]]\nname = \"classical\"\namount = -1\n", r"line 3: \[augment classical\]: amount: fraction must be a number > 0"),
    ("[[augment]]\nname = \"vanilla\"\namount = 0.5\n", r"line 3: .*'vanilla' cannot choose a class"),
    ("[[augment]]\nname = \"classical\"\nparams = { rotate = \"a lot\" }\n",
     r"line 3: \[augment classical\]: key 'params.rotate' must be a number"),
    ("[[augment]]\nname = \"classical\"\namount = 0.5\n[evaluate]\nepochz = 3\n",
     r"line 5: \[evaluate\]: unknown key 'epochz'; did you mean 'epochs'"),
    ("[[augment]]\nname = \"vanilla\"\n[evaluate]\narms = [\"vanilla\"]\n",
     r"arm 'vanilla': 'vanilla' is a step without 'amount'"),
    ("[[augment]]\nname = \"vanilla\"\n[[augment]]\nname = \"acgan\"\namount = 0.5\nparams = { base = \"vanila\" }\n",
     r"line 6: .*params.base = 'vanila' is neither a step of this recipe nor an existing folder; did you mean"),
    ("[[augment]]\nname = \"classical\"\n[[augment]]\nname = \"acgan\"\namount = 0.5\nparams = { base = \"classical\" }\n",
     r"params.base = 'classical' is a 'classical' step; expected 'vanilla'"),
    ("[[augment]]\nname = \"classical\"\n[[augment]]\nname = \"latent_perturb\"\namount = 0.5\n"
     "params = { generator = \"classical\" }\n",
     r"params.generator = 'classical' is a 'classical' step; expected a generator an encoder can be trained through \(acgan, cgan, vanilla\)"),
    ("[[augment]]\nname = \"classical\"\n[[augment]]\nname = \"classical\"\n", r"two steps are called 'classical'"),
    ("[data]\nsplit = { train = 0.7, vall = 0.3 }\n", r"unknown split part 'vall'; did you mean 'val'"),
    ("[data\nsource = 1\n", r"r\.toml: not valid TOML: .*line 1"),
    ("[evaluate]\ntrain_fractions = [0.1, 0.5]\n", r"line 2: \[evaluate\]: train_fractions .*include 1\.0"),
    ("[evaluate]\ntrain_fractions = [0.0, 1.0]\n", r"line 2: \[evaluate\]: train_fractions must be a list of numbers in"),
    ("[[augment]]\nname = \"classical\"\namount = 0.5\n[evaluate]\nversus = [\"classical=ac\"]\n",
     r"line 5: \[evaluate\]: versus 'classical=ac': no arm named 'ac' \(arms: baseline, classical\)"),
    ("[[augment]]\nname = \"classical\"\namount = 0.5\n[evaluate]\nversus = \"classical=baseline\"\n",
     r"line 5: \[evaluate\]: versus must be a list"),
    ("[evaluate]\nschedule = \"cosine\"\n", r"line 2: \[evaluate\]: key 'schedule' must be one of 'plateau', 'onecycle'"),
])
def test_mistakes_name_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(ParamError, match=expected):
        load_recipe(write(tmp_path, text))


@dataclass(frozen=True)
class ChainedParams:
    source: str | None = field(default=None, metadata={AUGMENTER_REF: ()})  # any step may be the source


class Chained(Augmenter):
    """An augmenter built on another step of any kind: enough to write a cycle."""

    name = "chained"
    Params = ChainedParams

    def generate(self, label, n, ctx):
        raise NotImplementedError


class ChainedPlugin:
    @hookimpl
    def augkit_augmenters(self):
        return {"chained": Chained}


def test_a_cycle_between_steps_is_refused(tmp_path, monkeypatch):
    registry = Registry().load_plugins()
    registry.register(ChainedPlugin(), "chained-test")
    monkeypatch.setattr(registry_module, "_default", registry)
    text = ("[[augment]]\nid = \"a\"\nname = \"chained\"\nparams = { source = \"b\" }\n"
            "[[augment]]\nid = \"b\"\nname = \"chained\"\nparams = { source = \"c\" }\n"
            "[[augment]]\nid = \"c\"\nname = \"chained\"\nparams = { source = \"a\" }\n")
    with pytest.raises(ParamError, match=r"cycle: a -> b -> c -> a"):
        load_recipe(write(tmp_path, text))
    # without the cycle the same plugin's steps are ordered by their references
    recipe = load_recipe(write(tmp_path, text.replace('source = "a"', 'source = "classical"')
                               + "[[augment]]\nname = \"classical\"\n"))
    assert [s.id for s in recipe.order()] == ["classical", "c", "b", "a"]


def test_set_overrides_any_key_before_the_check(tmp_path):
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["evaluate.epochs=3", "data.image_size=32", "augment.ac.params.steps=5",
                                "augment.1.amount=0.25", "evaluate.arms=[\"classical\"]", "output.dir=elsewhere"])
    assert recipe.evaluate.config.epochs == 3
    assert recipe.data.image_size == 32
    assert recipe.step("ac").params["steps"] == 5
    assert recipe.step("classical").amount.fraction == 0.25
    assert recipe.evaluate.arms == ("baseline", "classical")
    assert recipe.out == Path("elsewhere")
    assert recipe.resolved["evaluate"]["epochs"] == 3  # what the run folder records is what runs
    with pytest.raises(ParamError, match=r"key 'epochs' must be an integer, got 'many'"):
        load_recipe(path, ["evaluate.epochs=many"])
    with pytest.raises(ParamError, match=r"no augment step 'acgan' \(steps: vanilla, classical, ac\)"):
        load_recipe(path, ["augment.acgan.params.steps=5"])
    with pytest.raises(ParamError, match=r"unknown table 'evaluation'; did you mean 'evaluate'"):
        load_recipe(path, ["evaluation.epochs=3"])
    with pytest.raises(ParamError, match=r"expected key=value"):
        load_recipe(path, ["evaluate.epochs"])


def test_set_values_are_toml_values_or_bare_strings():
    assert parse_value("3") == 3
    assert parse_value("0.5") == 0.5
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value('"x y"') == "x y"
    assert parse_value("{ balance_to = \"max\" }") == {"balance_to": "max"}
    assert parse_value("../data/pbc128") == "../data/pbc128"
    raw: dict = {}
    apply_set(raw, "data.split.train=0.8")
    assert raw == {"data": {"split": {"train": 0.8}}}


def test_paths_in_the_file_are_relative_to_it_and_set_paths_to_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "sub" / "images").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    path = write(tmp_path / "sub", '[data]\nsource = "images"\n')
    assert load_recipe(path).data.source == str((tmp_path / "sub" / "images").resolve())
    monkeypatch.chdir(tmp_path)
    assert load_recipe(path, ["data.source=other"]).data.source == str((tmp_path / "other").resolve())


def test_an_external_test_set_replaces_the_test_split(tmp_path):
    from conftest import write_dataset

    locked = write_dataset(tmp_path / "locked.h5")
    path = write(tmp_path, '[data]\ntest = "locked.h5"\n')
    recipe = load_recipe(path)
    assert recipe.data.test == str(locked.resolve())
    assert recipe.data.split == {"train": 0.8, "val": 0.2}
    path = write(tmp_path, '[data]\ntest = "locked.h5"\nsplit = { train = 0.7, val = 0.15, test = 0.15 }\n')
    with pytest.raises(ParamError, match="split has a test part but data.test gives a fixed test set"):
        load_recipe(path)
    path = write(tmp_path, '[data]\ntest = "missing.h5"\n')
    with pytest.raises(ParamError, match=r"line 2: \[data\]: test '.*missing.h5': no such file"):
        load_recipe(path)
