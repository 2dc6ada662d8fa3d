//! Evaluations by name: `eval.attacks` and `eval.validation_attack` in the
//! config and `--attacks` on the command line. Parsed here, where the config
//! is validated; `crate::eval` builds and runs them (see its module docs for
//! what each one is).

use crate::error::{Error, Result};

/// AutoAttack's query budget for `square` (standard version).
pub const SQUARE_QUERIES: usize = 5000;
/// Steps of `cw` without a count.
pub const CW_STEPS: usize = 30;
/// Iterations of `apgd_*` without a count.
pub const APGD_ITERATIONS: usize = 100;
/// Iterations of `fab_t` (per target class) without a count.
pub const FAB_ITERATIONS: usize = 100;
/// The evaluations `autoattack` runs, in its order (AutoAttack's standard version).
pub const AUTOATTACK_PARTS: [&str; 4] = ["apgd_ce", "apgd_t", "fab_t", "square"];

/// The evaluation names, for error messages.
pub const KNOWN_EVALS: &str = "natural, train_attack, fgsm, pgdK (e.g. pgd20), cw[K], \
     apgd_ce[K], apgd_dlr[K], apgd_t[K], fab_t[K], square[K], autoattack; add _rR for R \
     restarts (e.g. pgd20_r5; not fab_t, which has no random start, nor square, which takes \
     more queries instead)";

/// An evaluation, by its name in `eval.attacks` and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalAttack {
    /// Clean inputs.
    Natural,
    /// The configured training attack, BatchNorm in eval mode (the paper's robust number).
    TrainAttack,
    /// FGSM of eps from x.
    Fgsm,
    /// PGD-k on cross-entropy: uniform start, step 2/255.
    Pgd { steps: usize, restarts: usize },
    /// CW-inf: PGD on the CW margin loss, uniform start, step 2/255.
    Cw { steps: usize, restarts: usize },
    /// APGD-CE.
    ApgdCe { iterations: usize, restarts: usize },
    /// APGD-DLR (untargeted).
    ApgdDlr { iterations: usize, restarts: usize },
    /// APGD-T: targeted DLR towards 9 target classes.
    ApgdT { iterations: usize, restarts: usize },
    /// FAB-T: targeted minimal-distortion attack, 9 target classes,
    /// `iterations` per target, from the clean point.
    FabT { iterations: usize },
    /// L-inf Square: score-based random search, `queries` per image.
    Square { queries: usize },
    /// AutoAttack, standard version: APGD-CE, APGD-T, FAB-T and Square as a cascade.
    AutoAttack,
}

/// `K` of a name such as `pgd20`: None when absent, an error when malformed.
fn count(name: &str, digits: &str) -> std::result::Result<Option<usize>, String> {
    if digits.is_empty() {
        return Ok(None);
    }
    match digits.parse::<usize>() {
        Ok(k) if k >= 1 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(k)),
        _ => Err(format!(
            "evaluation {name:?}: {digits:?} is not a count of at least 1; known: {KNOWN_EVALS}"
        )),
    }
}

impl EvalAttack {
    /// Parses a name of [`KNOWN_EVALS`] (see the module docs).
    pub fn parse(name: &str) -> std::result::Result<EvalAttack, String> {
        let unknown = || format!("unknown evaluation {name:?}; known: {KNOWN_EVALS}");
        let (base, restarts) = match name.rsplit_once("_r") {
            Some((base, r)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => {
                (base, count(name, r)?.ok_or_else(unknown)?)
            }
            _ => (name, 1),
        };
        let single = |e: EvalAttack| {
            if restarts == 1 {
                Ok(e)
            } else {
                Err(format!(
                    "evaluation {name:?}: {base} has no random start to restart"
                ))
            }
        };
        match base {
            "natural" => return single(EvalAttack::Natural),
            "train_attack" => return single(EvalAttack::TrainAttack),
            "fgsm" => return single(EvalAttack::Fgsm),
            "autoattack" => return single(EvalAttack::AutoAttack),
            _ => {}
        }
        // Each counted name with its default count; longest prefixes first:
        // apgd_t must not swallow another name.
        let counted = [
            ("square", Some(SQUARE_QUERIES)),
            ("apgd_dlr", Some(APGD_ITERATIONS)),
            ("apgd_ce", Some(APGD_ITERATIONS)),
            ("apgd_t", Some(APGD_ITERATIONS)),
            ("fab_t", Some(FAB_ITERATIONS)),
            ("pgd", None),
            ("cw", Some(CW_STEPS)),
        ];
        let Some((prefix, default)) = counted.into_iter().find(|(p, _)| base.starts_with(p)) else {
            return Err(unknown());
        };
        if prefix == "square" && restarts != 1 {
            return Err(format!(
                "evaluation {name:?}: square has no restarts; give it more queries (square10000)"
            ));
        }
        if prefix == "fab_t" && restarts != 1 {
            return Err(format!(
                "evaluation {name:?}: fab_t starts at the clean point and has no restarts"
            ));
        }
        let digits = &base[prefix.len()..];
        if !digits.is_empty() && !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        let k = count(name, digits)?.or(default).ok_or_else(unknown)?;
        Ok(match prefix {
            "apgd_dlr" => EvalAttack::ApgdDlr {
                iterations: k,
                restarts,
            },
            "apgd_ce" => EvalAttack::ApgdCe {
                iterations: k,
                restarts,
            },
            "apgd_t" => EvalAttack::ApgdT {
                iterations: k,
                restarts,
            },
            "fab_t" => EvalAttack::FabT { iterations: k },
            "pgd" => EvalAttack::Pgd { steps: k, restarts },
            "cw" => EvalAttack::Cw { steps: k, restarts },
            "square" => EvalAttack::Square { queries: k },
            _ => unreachable!("{prefix} is one of the counted names above"),
        })
    }

    /// Parses a comma-separated list (`natural,pgd20,apgd_ce`); blanks around names are ignored.
    pub fn parse_list(list: &str) -> Result<Vec<EvalAttack>> {
        let evals: Vec<EvalAttack> = list
            .split(',')
            .map(|a| EvalAttack::parse(a.trim()).map_err(Error::Usage))
            .collect::<Result<_>>()?;
        EvalAttack::check_list(&evals).map_err(Error::Usage)?;
        Ok(evals)
    }

    /// Refuses a list that names an evaluation twice, or `autoattack`
    /// beside one of its own parts (which it runs already).
    pub fn check_list(evals: &[EvalAttack]) -> std::result::Result<(), String> {
        let mut names: Vec<String> = evals.iter().map(|e| e.name()).collect();
        if names.iter().any(|n| n == "autoattack") {
            if let Some(part) = names
                .iter()
                .find(|n| AUTOATTACK_PARTS.contains(&n.as_str()))
            {
                return Err(format!(
                    "evaluation {part:?} is part of autoattack ({}), which runs it already: \
                     list autoattack or {part}, not both",
                    AUTOATTACK_PARTS.join(", ")
                ));
            }
        }
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("evaluation {:?} is listed twice", w[0]));
        }
        Ok(())
    }

    /// The canonical name (`pgd20`, `cw`, `apgd_ce`, `apgd_t50_r2`, ...).
    pub fn name(&self) -> String {
        let with = |base: &str, k: usize, default: Option<usize>, r: usize| {
            let mut s = base.to_string();
            if Some(k) != default {
                s += &k.to_string();
            }
            if r > 1 {
                s += &format!("_r{r}");
            }
            s
        };
        match *self {
            EvalAttack::Natural => "natural".into(),
            EvalAttack::TrainAttack => "train_attack".into(),
            EvalAttack::Fgsm => "fgsm".into(),
            EvalAttack::Pgd { steps, restarts } => with("pgd", steps, None, restarts),
            EvalAttack::Cw { steps, restarts } => with("cw", steps, Some(CW_STEPS), restarts),
            EvalAttack::ApgdCe {
                iterations,
                restarts,
            } => with("apgd_ce", iterations, Some(APGD_ITERATIONS), restarts),
            EvalAttack::ApgdDlr {
                iterations,
                restarts,
            } => with("apgd_dlr", iterations, Some(APGD_ITERATIONS), restarts),
            EvalAttack::ApgdT {
                iterations,
                restarts,
            } => with("apgd_t", iterations, Some(APGD_ITERATIONS), restarts),
            EvalAttack::FabT { iterations } => with("fab_t", iterations, Some(FAB_ITERATIONS), 1),
            EvalAttack::Square { queries } => with("square", queries, Some(SQUARE_QUERIES), 1),
            EvalAttack::AutoAttack => "autoattack".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "natural",
            "train_attack",
            "fgsm",
            "pgd20",
            "pgd1",
            "pgd20_r5",
            "cw",
            "cw50",
            "cw_r2",
            "apgd_ce",
            "apgd_ce20",
            "apgd_dlr",
            "apgd_dlr_r3",
            "apgd_t",
            "apgd_t50_r2",
            "square",
            "square1000",
            "fab_t",
            "fab_t20",
            "autoattack",
        ] {
            let e = EvalAttack::parse(name).unwrap();
            assert_eq!(e.name(), name);
        }
        assert_eq!(
            EvalAttack::parse("cw30").unwrap(),
            EvalAttack::Cw {
                steps: 30,
                restarts: 1
            }
        );
        assert_eq!(EvalAttack::parse("pgd20_r1").unwrap().name(), "pgd20");
        assert_eq!(
            EvalAttack::parse("apgd_t").unwrap(),
            EvalAttack::ApgdT {
                iterations: 100,
                restarts: 1
            }
        );
    }

    #[test]
    fn rejects_bad_names() {
        for name in [
            "",
            "pgd",
            "pgd0",
            "pgdx",
            "pgd20_r",
            "pgd20_r0",
            "fgsm_r2",
            "natural_r3",
            "cwx",
            "apgd",
            "apgd_ce_",
            "apgd_cex",
            "apgd_t0",
            "autoattack2",
            "autoattack_r2",
            "fab_t_r2",
            "fab_t0",
            "fab",
            "pgd-20",
            "pgd+5",
            "square_r2",
            "square0",
            "squarex",
        ] {
            let err = EvalAttack::parse(name).unwrap_err();
            assert!(err.contains(name) || name.is_empty(), "{name}: {err}");
        }
        assert!(EvalAttack::parse_list("natural,pgd20,pgd20_r1").is_err());
        assert_eq!(EvalAttack::parse_list(" natural , cw").unwrap().len(), 2);
    }

    #[test]
    fn autoattack_beside_its_own_parts_is_refused() {
        for part in AUTOATTACK_PARTS {
            let err = EvalAttack::parse_list(&format!("natural,autoattack,{part}")).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(part) && text.contains("not both"), "{text}");
        }
        // Other strengths of the same attacks are other evaluations.
        let ok = EvalAttack::parse_list("natural,pgd20,apgd_ce20,square1000,fab_t50,autoattack");
        assert_eq!(ok.unwrap().len(), 6);
        assert!(EvalAttack::parse_list("autoattack,autoattack").is_err());
    }
}
