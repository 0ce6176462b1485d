//! The model stage between the CPU stage and the sink (only with model-backed
//! conditions): one thread runs the networks over each chunk in batches, a second decodes
//! the outputs into maps and encodes them on the CPU pool. Chunks stream through bounded
//! channels, so the network works on chunk k while the pool prepares chunk k+1 and
//! finishes chunk k−1. Begin/End messages pass through in order.

use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use crossbeam_channel::{bounded, Sender};
use rayon::prelude::*;

use super::{Outcome, SinkMsg};
use crate::condition::model::{ModelSet, Pending};

pub(super) struct Handles {
    infer: JoinHandle<Result<()>>,
    finish: JoinHandle<Result<()>>,
}

impl Handles {
    pub(super) fn join(self) -> Result<()> {
        let a = self
            .infer
            .join()
            .map_err(|_| anyhow::anyhow!("the inference thread panicked"))?;
        let b = self
            .finish
            .join()
            .map_err(|_| anyhow::anyhow!("the model decoding thread panicked"))?;
        a.and(b)
    }
}

pub(super) fn spawn(
    models: Arc<ModelSet>,
    pool: Arc<rayon::ThreadPool>,
    sink_tx: Sender<SinkMsg>,
) -> Result<(Sender<SinkMsg>, Handles)> {
    let (in_tx, in_rx) = bounded::<SinkMsg>(2);
    let (mid_tx, mid_rx) = bounded::<SinkMsg>(2);
    let infer = {
        let models = models.clone();
        std::thread::Builder::new()
            .name("prep-infer".into())
            .spawn(move || -> Result<()> {
                for msg in in_rx {
                    let msg = match msg {
                        SinkMsg::Rows(mut outcomes) => {
                            let mut pending: Vec<&mut Pending> = outcomes
                                .iter_mut()
                                .filter_map(|p| match &mut p.outcome {
                                    Outcome::Row(_, Some(p)) => Some(p.as_mut()),
                                    _ => None,
                                })
                                .collect();
                            models.infer(&mut pending)?;
                            SinkMsg::Rows(outcomes)
                        }
                        other => other,
                    };
                    if mid_tx.send(msg).is_err() {
                        break;
                    }
                }
                Ok(())
            })?
    };
    let finish = std::thread::Builder::new()
        .name("prep-decode".into())
        .spawn(move || -> Result<()> {
            for msg in mid_rx {
                let msg = match msg {
                    SinkMsg::Rows(outcomes) => SinkMsg::Rows(pool.install(|| {
                        outcomes
                            .into_par_iter()
                            .map(|mut p| {
                                p.outcome = finish_one(&models, p.outcome);
                                p
                            })
                            .collect()
                    })),
                    other => other,
                };
                if sink_tx.send(msg).is_err() {
                    break;
                }
            }
            Ok(())
        })?;
    Ok((in_tx, Handles { infer, finish }))
}

fn finish_one(models: &ModelSet, o: Outcome) -> Outcome {
    match o {
        Outcome::Row(mut row, Some(p)) => match models.finish(&p, &mut row.conditions) {
            Ok(persons) => {
                if let Some(ps) = persons {
                    row.keypoints = Some(
                        ps.iter()
                            .map(|p| p.keypoints.iter().flatten().copied().collect())
                            .collect(),
                    );
                }
                Outcome::Row(row, None)
            }
            Err(f) => Outcome::Failed(f),
        },
        other => other,
    }
}
