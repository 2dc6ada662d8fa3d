//! The validation split on the real CIFAR-10 files: the last
//! `data.validation_images` training images, disjoint from what training
//! sees (with and without `data.train_limit`), while the training images stay
//! the same prefix as before the split existed (so data order, the parity
//! tests and soft-label caches are unchanged).

mod common;

use ard_pipeline::config::{self, DataChecksums, DataConfig};
use ard_pipeline::data::{self, validation, EpochPlan, SplitKind};

fn data_cfg(validation_images: usize, train_limit: Option<usize>) -> DataConfig {
    DataConfig {
        root: common::cifar_root(),
        download: false,
        checksums: DataChecksums::Skip,
        train_limit,
        validation_images,
        ..DataConfig::default()
    }
}

#[test]
fn validation_images_are_held_out_of_training() {
    let all =
        data::load_split(&common::cifar_root(), SplitKind::Train, DataChecksums::Skip).unwrap();
    assert_eq!(all.len(), 50_000);
    for (v, limit) in [
        (1000, None),
        (1000, Some(256)),
        (5000, Some(45_000)),
        (0, None),
    ] {
        let cfg = data_cfg(v, limit);
        let (train, val) = validation::load_train_and_validation(&cfg).unwrap();
        let (train_range, val_range) = validation::split_ranges(50_000, v, limit);
        assert_eq!(val.len(), v);
        assert_eq!(train.len(), limit.unwrap_or(50_000 - v));
        assert_eq!(train.len(), validation::train_images(&cfg));
        // Training is the unchanged prefix of the files: the same bytes as
        // `train_limit` alone gave before the split existed.
        assert_eq!(
            train,
            all.clone().prefix(train.len()),
            "v={v} limit={limit:?}"
        );
        // Validation is the files' last images.
        for i in [0, v / 2, v.saturating_sub(1)]
            .into_iter()
            .filter(|&i| i < v)
        {
            assert_eq!(val.image(i), all.image(50_000 - v + i));
            assert_eq!(val.label(i), all.label(50_000 - v + i));
        }
        // Every index any epoch trains on is a training index, never a validation one.
        for epoch in 0..2 {
            let plan = EpochPlan::train(&cfg, 3, epoch);
            for (indices, _) in plan.batches(train.len()) {
                for i in indices {
                    assert!(train_range.contains(&i) && !val_range.contains(&i));
                }
            }
        }
        // `data::load` (the soft-label cache's view of the training set) agrees.
        assert_eq!(data::load(&cfg, SplitKind::Train).unwrap(), train);
    }
}

#[test]
fn the_run_setup_uses_the_split_and_bad_sizes_are_refused() {
    let text = format!(
        "[run]\ndevice = \"cpu\"\n[data]\nroot = \"{}\"\ndownload = false\nchecksums = \"skip\"\n\
         train_limit = 64\nvalidation_images = 200\n[student]\narch = \"mobilenet_v2_x0.25\"\n\
         [loss]\nkind = \"pgd_at\"\n[eval]\ntest_limit = 16\n",
        common::cifar_root().display()
    );
    let cfg = config::load_str(&text, "split.toml", false).unwrap();
    let setup = ard_pipeline::train::context::Setup::build(&cfg).unwrap();
    assert_eq!((setup.train.len(), setup.validation.len()), (64, 200));
    let all =
        data::load_split(&common::cifar_root(), SplitKind::Train, DataChecksums::Skip).unwrap();
    assert_eq!(setup.validation.image(199), all.image(49_999));

    let err = config::load_str(
        "[data]\ntrain_limit = 49500\nvalidation_images = 1000\n[loss]\nkind = \"pgd_at\"\n",
        "bad.toml",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("data.train_limit") && err.contains("49000"),
        "{err}"
    );
    let err = config::load_str(
        "[data]\nvalidation_images = 50000\n[loss]\nkind = \"pgd_at\"\n",
        "bad.toml",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("data.validation_images"), "{err}");
    let err = config::load_str(
        "[data]\nvalidation_images = 0\n[guard]\naction = \"warn\"\n[loss]\nkind = \"pgd_at\"\n",
        "bad.toml",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("guard.action"), "{err}");
    let err = config::load_str(
        "[guard]\nmax_drop = 0\n[eval]\nvalidation_attack = \"pgd\"\n[loss]\nkind = \"pgd_at\"\n",
        "bad.toml",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("guard.max_drop") && err.contains("eval.validation_attack"),
        "{err}"
    );
    let err = config::load_str("[guard]\nacton = \"stop\"\n", "bad.toml", false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("acton"), "{err}");
}
