"""The rotations (SO(3) density) and backbones (SE(3)^N frames) domains end to end at tiny size."""

from __future__ import annotations

import subprocess

import h5py
import numpy as np
import pytest
import torch
from conftest import FLOWSCI, REPO, subprocess_env

from flowsci.config import load_config
from flowsci.data import load_split
from flowsci.errors import ConfigError
from flowsci.plugins import create_domain
from flowsci.spaces.igso3 import IGSO3
from flowsci.spaces.so3 import SO3Matrix, SO3Quaternion
from flowsci.training import train
from flowsci_domains.rotations.mixture import SO3Mixture

ROTATIONS_YAML = REPO / "domains" / "rotations.yaml"
BACKBONES_YAML = REPO / "domains" / "backbones.yaml"
TINY_SO3 = ["data.n_train=3000", "data.n_val=300", "data.n_test=300", "model.width=64", "model.depth=3",
            "train.steps=300", "train.batch_size=128", "train.log_every=10", "train.warmup_steps=10",
            "train.checkpoint_every=300", "train.eval_every=0", "eval.n_samples=300", "eval.steps=[1,4]",
            "sample.steps=5"]
TINY_BACKBONES = ["domain.source=synthetic", "domain.length=12", "domain.stride=4", "domain.n_synthetic=12",
                  "data.n_val=2", "data.n_test=2", "model.dim=16", "model.depth=1", "model.heads=2",
                  "model.pair_dim=8", "train.steps=6", "train.batch_size=4", "train.log_every=1",
                  "train.warmup_steps=2", "train.checkpoint_every=6", "train.eval_every=0",
                  "eval.n_samples=4", "eval.timing_steps=[3]", "eval.timing_samples=2", "sample.steps=4"]


@pytest.fixture(scope="module")
def so3_run(tmp_path_factory):
    return train(load_config(ROTATIONS_YAML, TINY_SO3), tmp_path_factory.mktemp("runs") / "so3",
                 progress=False)


def test_mixture_samples_follow_its_log_density():
    """The mixture's log density is a normalised density of its samples: E_Haar[p] = 1 / 8 pi^2
    (Monte Carlo), and its samples score higher than Haar samples."""
    mixture = SO3Mixture(n_components=3, seed=1)
    haar = SO3Matrix().random_base(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(mixture.log_prob(haar).exp().mean() * 8 * np.pi ** 2) == pytest.approx(1.0, abs=0.03)
    samples = mixture.sample(2000, torch.Generator().manual_seed(1))
    assert float(mixture.log_prob(samples).mean()) > float(mixture.log_prob(haar[:2000]).mean()) + 2
    # each component's angle distribution about its mean is the IGSO(3) one (KS against its CDF)
    from scipy.stats import kstest
    single = SO3Mixture(n_components=1, sigma_min=0.3, sigma_max=0.3, seed=2)
    angles = SO3Matrix().dist(single.means[0].expand(3000, 3, 3),
                              single.sample(3000, torch.Generator().manual_seed(3)))
    igso3 = IGSO3(0.3)
    assert kstest(angles.numpy(), lambda w: np.interp(w, *igso3_cdf_table(igso3))).pvalue > 1e-3


def igso3_cdf_table(igso3: IGSO3) -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(0, np.pi, 2001)
    return grid, igso3.angle_cdf(torch.from_numpy(grid)).numpy()


def test_data_is_stored_as_matrices_and_read_in_either_chart(tmp_path):
    cfg = load_config(ROTATIONS_YAML, TINY_SO3)
    domain = create_domain("rotations")
    quaternions = domain.build_data(cfg).test.tensors["x1"]
    matrices = domain.build_data(
        load_config(ROTATIONS_YAML, [*TINY_SO3, "domain.chart=matrix"])).test.tensors["x1"]
    assert quaternions.shape == (300, 4) and matrices.shape == (300, 3, 3)
    torch.testing.assert_close(SO3Quaternion().to_matrix(quaternions), matrices, atol=1e-6, rtol=0)
    with h5py.File(domain.data_file(cfg)) as f:
        assert {"means", "sigmas", "weights", "mixture_seed"} <= set(f.attrs)


def test_training_on_so3_learns_the_mixture_and_reports_labelled_distances(so3_run):
    m = so3_run.metrics
    for key in ("w2", "w1", "w2_floor", "w2_ceiling", "w2_over_floor", "w2_nfe2", "w2_nfe8",
                "mixture_log_prob"):
        assert key in m and np.isfinite(m[key]), key
    assert m["w2_floor"] < m["w2"] < 0.6 * m["w2_ceiling"]        # it learned something in 300 steps
    cfg = load_config(so3_run.run_dir / "config.yaml")
    haar = SO3Matrix().random_base(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert m["mixture_log_prob"] > float(create_domain("rotations").mixture(cfg).log_prob(haar).mean()) + 3
    assert m["w1"] <= m["w2"] + 1e-12                              # W1 <= W2 for any coupling
    assert m["off_manifold"] < 1e-5
    figures = sorted(p.name for p in (so3_run.run_dir / "figures").glob("*.png"))
    assert figures == ["axes.png", "euler_angles.png", "nfe_curve.png"]


def test_likelihood_of_the_test_set_under_the_trained_flow(so3_run):
    """The flow's NLL lies between the true mixture NLL and the uniform NLL log(8 pi^2)."""
    cfg = load_config(so3_run.run_dir / "config.yaml", ["eval.likelihood_steps=8"])
    domain = create_domain("rotations")
    from flowsci.checkpoint import load_model
    model = load_model(so3_run.run_dir)
    x1 = domain.build_data(cfg).test.tensors["x1"][:100]
    nll = domain.negative_log_likelihood(model, x1, cfg)
    true_nll = float(-domain.mixture(cfg).log_prob(SO3Quaternion().to_matrix(x1)).mean())
    assert true_nll - 0.2 < nll < np.log(8 * np.pi ** 2)


def test_reflow_cli_keeps_only_pairs_that_pass_the_density_filter(so3_run, tmp_path):
    out = tmp_path / "pairs.h5"
    subprocess.run([FLOWSCI, "reflow", str(so3_run.run_dir), "-n", "200", "--batch-size", "100",
                    "--out", str(out)],
                   check=True, env=subprocess_env(), capture_output=True, text=True)
    pairs = load_split(out, "train", ["x0", "x1"])
    assert pairs["x0"].shape == (200, 4) and pairs["x1"].shape == (200, 4)
    cfg = load_config(so3_run.run_dir / "config.yaml")
    domain = create_domain("rotations")
    accept = domain.reflow_filter(cfg, domain.build_data(cfg))
    assert bool(accept(pairs["x0"], pairs["x1"]).all())
    # the pairs train the next flow with the paired coupling
    rectified = train(load_config(ROTATIONS_YAML, [*TINY_SO3, f"data.pairs={out}",
                                                   "objective.coupling=paired", "train.steps=5",
                                                   f"train.init_from={so3_run.run_dir}"]),
                      tmp_path / "reflow", progress=False)
    assert np.isfinite(rectified.metrics["w2"])


def test_a_euclidean_path_on_so3_is_a_clear_config_error(tmp_path):
    with pytest.raises(ConfigError, match="geodesic"):
        train(load_config(ROTATIONS_YAML, [*TINY_SO3, "objective.path=linear", "train.steps=1"]), tmp_path,
              progress=False)


# --- backbones ---------------------------------------------------------------------------

def test_backbones_synthetic_run_trains_samples_on_se3n_and_reports_geometry(tmp_path):
    cfg = load_config(BACKBONES_YAML, TINY_BACKBONES)
    result = train(cfg, tmp_path / "bb", progress=False)
    m = result.metrics
    for key in ("ca_ca_deviation", "ca_ca_valid_fraction", "clash_rate", "rg_mean", "rg_mean_test",
                "w1_ca_i2", "w1_ca_i3", "seconds_per_structure_steps3"):
        assert key in m and np.isfinite(m[key]), key
    assert m["ca_ca_valid_fraction_test"] > 0.99            # the data are ideal backbones
    assert m["off_manifold"] < 1e-4                          # centre of mass fixed, unit quaternions
    path = create_domain("backbones").data_file(cfg)
    with h5py.File(path) as f:
        assert f["splits/train/t2_fields/rotations"].shape[1:] == (12, 3, 3)
    figures = sorted(p.name for p in (result.run_dir / "figures").glob("*.png"))
    assert figures == ["backbones.png", "distances.png"]


def test_backbone_windows_are_centred_frames_of_the_structures(tmp_path):
    cfg = load_config(BACKBONES_YAML, TINY_BACKBONES)
    domain = create_domain("backbones")
    data = domain.build_data(cfg)
    x = data.train.tensors["x1"]
    space = domain.space(cfg)
    assert x.shape[1:] == (12, 7)
    assert float(space.constraint_violation(x).max()) < 1e-5
    ca = domain.ca_angstrom(x, cfg)
    bonds = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1)
    assert float((bonds - 3.80).abs().max()) < 0.05           # ideal CA-CA distance survives the frames


def test_backbones_source_must_be_a_directory(tmp_path):
    cfg = load_config(BACKBONES_YAML, [*TINY_BACKBONES, f"domain.source={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="not a directory"):
        create_domain("backbones").build_data(cfg)


def test_backbones_reads_a_directory_of_pdb_files(tmp_path):
    from flowsci_domains.rotations.ideal_backbone import ideal_backbone
    folder = tmp_path / "pdb"
    folder.mkdir()
    for i in range(5):
        write_pdb(folder / f"s{i}.pdb", ideal_backbone(20, "mixed", seed=i))
    cfg = load_config(BACKBONES_YAML, [*TINY_BACKBONES, f"domain.source={folder}", "data.n_val=1",
                                       "data.n_test=1"])
    data = create_domain("backbones").build_data(cfg)
    assert len(data.test) == 1 and len(data.train) == 3 * 3   # windows of 12 with stride 4 in 20 residues


def write_pdb(path, coords: np.ndarray) -> None:
    """A minimal PDB file of a poly-alanine backbone (N, CA, C per residue)."""
    lines, serial = [], 1
    for i, residue in enumerate(coords):
        for name, xyz in zip(("N", "CA", "C"), residue):
            lines.append(f"ATOM  {serial:5d}  {name:<3s} ALA A{i + 1:4d}    "
                         f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00  0.00           {name[0]}")
            serial += 1
    path.write_text("\n".join(lines) + "\nEND\n")
