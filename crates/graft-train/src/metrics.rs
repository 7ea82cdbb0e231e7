//! Evaluation metrics as scikit-learn defines them. Classification: accuracy, macro-F1, a
//! per-class precision/recall/F1/support report and the confusion matrix (rows are true classes,
//! columns predicted). Multi-label: micro and macro F1, Hamming loss, subset accuracy and a
//! per-label report. Regression: MAE, RMSE and R².

use serde::{Deserialize, Serialize};

use crate::task::Task;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub labels: Vec<String>,
    pub per_class: Vec<ClassReport>,
    pub confusion_matrix: Vec<Vec<usize>>,
}

impl EvalReport {
    /// Scores `predicted` against `targets` (class indices into `labels`). A class that is never
    /// predicted has precision 0, one never present has recall 0 (scikit-learn's zero_division=0).
    pub fn new(labels: &[String], targets: &[usize], predicted: &[usize]) -> Self {
        let k = labels.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&t, &p) in targets.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let n = targets.len();
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_class: Vec<ClassReport> = (0..k)
            .map(|c| {
                let tp = confusion[c][c];
                let support: usize = confusion[c].iter().sum();
                let predicted_c: usize = confusion.iter().map(|row| row[c]).sum();
                let precision = ratio(tp, predicted_c);
                let recall = ratio(tp, support);
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassReport {
                    label: labels[c].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let macro_f1 = per_class.iter().map(|c| c.f1).sum::<f64>() / k as f64;
        Self {
            n,
            accuracy: ratio(correct, n),
            macro_f1,
            labels: labels.to_vec(),
            per_class,
            confusion_matrix: confusion,
        }
    }

    /// A plain-text report: the summary, the per-class table and the confusion matrix.
    pub fn to_table(&self) -> String {
        let width = label_width(&self.labels);
        let mut out = format!(
            "n = {}  accuracy = {:.4}  macro-F1 = {:.4}\n\n",
            self.n, self.accuracy, self.macro_f1
        );
        out += &per_class_table("class", &self.per_class, width);
        out += &format!(
            "\nconfusion matrix (rows: true, columns: predicted)\n{:>width$}",
            ""
        );
        for label in &self.labels {
            out += &format!("  {label:>width$}");
        }
        out.push('\n');
        for (label, row) in self.labels.iter().zip(&self.confusion_matrix) {
            out += &format!("{label:>width$}");
            for count in row {
                out += &format!("  {count:>width$}");
            }
            out.push('\n');
        }
        out
    }
}

fn label_width(labels: &[String]) -> usize {
    labels.iter().map(String::len).max().unwrap_or(5).max(9)
}

/// The precision/recall/F1/support table, one row per class.
fn per_class_table(header: &str, rows: &[ClassReport], width: usize) -> String {
    let mut out = format!("{header:>width$}  precision  recall      f1  support\n");
    for c in rows {
        out += &format!(
            "{:>width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}\n",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    out
}

fn f1_of(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelReport {
    pub n: usize,
    pub threshold: f64,
    pub micro_f1: f64,
    pub macro_f1: f64,
    /// The fraction of (example, label) decisions that are wrong.
    pub hamming_loss: f64,
    /// The fraction of examples whose whole label set is right.
    pub subset_accuracy: f64,
    pub labels: Vec<String>,
    pub per_label: Vec<ClassReport>,
}

impl MultiLabelReport {
    pub fn new(
        labels: &[String],
        targets: &[Vec<bool>],
        predicted: &[Vec<bool>],
        threshold: f64,
    ) -> Self {
        let k = labels.len();
        let (mut tp, mut fp, mut fneg) = (vec![0usize; k], vec![0usize; k], vec![0usize; k]);
        let (mut wrong, mut exact) = (0usize, 0usize);
        for (t, p) in targets.iter().zip(predicted) {
            let mut all_right = true;
            for c in 0..k {
                match (t[c], p[c]) {
                    (true, true) => tp[c] += 1,
                    (false, true) => fp[c] += 1,
                    (true, false) => fneg[c] += 1,
                    (false, false) => {}
                }
                if t[c] != p[c] {
                    wrong += 1;
                    all_right = false;
                }
            }
            exact += all_right as usize;
        }
        let per_label: Vec<ClassReport> = (0..k)
            .map(|c| {
                let precision = ratio(tp[c], tp[c] + fp[c]);
                let recall = ratio(tp[c], tp[c] + fneg[c]);
                ClassReport {
                    label: labels[c].clone(),
                    precision,
                    recall,
                    f1: f1_of(precision, recall),
                    support: tp[c] + fneg[c],
                }
            })
            .collect();
        let (tp_all, fp_all, fn_all): (usize, usize, usize) =
            (tp.iter().sum(), fp.iter().sum(), fneg.iter().sum());
        let n = targets.len();
        Self {
            n,
            threshold,
            micro_f1: f1_of(
                ratio(tp_all, tp_all + fp_all),
                ratio(tp_all, tp_all + fn_all),
            ),
            macro_f1: per_label.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64,
            hamming_loss: ratio(wrong, n * k),
            subset_accuracy: ratio(exact, n),
            labels: labels.to_vec(),
            per_label,
        }
    }

    pub fn to_table(&self) -> String {
        let mut out = format!(
            "n = {}  micro-F1 = {:.4}  macro-F1 = {:.4}  Hamming loss = {:.4}  subset accuracy = {:.4}  (threshold {})\n\n",
            self.n,
            self.micro_f1,
            self.macro_f1,
            self.hamming_loss,
            self.subset_accuracy,
            self.threshold
        );
        out += &per_class_table("label", &self.per_label, label_width(&self.labels));
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    pub n: usize,
    pub mae: f64,
    pub rmse: f64,
    /// 1 - SS_res / SS_tot (0 when the targets are constant and predicted exactly, else -inf is
    /// avoided by reporting 0).
    pub r2: f64,
    /// Pearson's correlation of predictions and targets (STS benchmarks report it), and
    /// Spearman's (Pearson's of their ranks, ties ranked by their mean, as scipy's `spearmanr`);
    /// 0 where either side is constant.
    #[serde(default)]
    pub pearson: f64,
    #[serde(default)]
    pub spearman: f64,
}

/// Pearson's correlation; 0 when either side has no variance.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()).max(1) as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx > 0.0 && syy > 0.0 {
        sxy / (sxx * syy).sqrt()
    } else {
        0.0
    }
}

/// Ranks from 1, tied values sharing the mean of their ranks.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let mean = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

impl RegressionReport {
    pub fn new(targets: &[f64], predicted: &[f64]) -> Self {
        let n = targets.len();
        let mean = targets.iter().sum::<f64>() / n.max(1) as f64;
        let (mut abs, mut sq, mut tot) = (0.0, 0.0, 0.0);
        for (&t, &p) in targets.iter().zip(predicted) {
            abs += (t - p).abs();
            sq += (t - p) * (t - p);
            tot += (t - mean) * (t - mean);
        }
        let nf = n.max(1) as f64;
        Self {
            n,
            mae: abs / nf,
            rmse: (sq / nf).sqrt(),
            r2: if tot > 0.0 { 1.0 - sq / tot } else { 0.0 },
            pearson: pearson(predicted, targets),
            spearman: spearman(predicted, targets),
        }
    }

    pub fn to_table(&self) -> String {
        format!(
            "n = {}  MAE = {:.4}  RMSE = {:.4}  R² = {:.4}  Pearson = {:.4}  Spearman = {:.4}\n",
            self.n, self.mae, self.rmse, self.r2, self.pearson, self.spearman
        )
    }
}

/// An evaluation of any task; serializes as the task's own report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Report {
    Classification(EvalReport),
    MultiLabel(MultiLabelReport),
    Regression(RegressionReport),
    /// Token classification: seqeval's entity-level scores.
    Entities(crate::entities::EntityReport),
    /// Embedding training: retrieval or similarity scores.
    Embedding(crate::task::embedding::EmbeddingReport),
}

impl Report {
    pub fn to_table(&self) -> String {
        match self {
            Self::Classification(r) => r.to_table(),
            Self::MultiLabel(r) => r.to_table(),
            Self::Regression(r) => r.to_table(),
            Self::Entities(r) => r.to_table(),
            Self::Embedding(r) => r.to_table(),
        }
    }

    /// The task the report is of.
    pub fn task(&self) -> Task {
        match self {
            Self::Classification(_) => Task::Classification,
            Self::MultiLabel(_) => Task::MultiLabel,
            Self::Regression(_) => Task::Regression,
            Self::Entities(_) => Task::TokenClassification,
            Self::Embedding(_) => Task::Embedding,
        }
    }

    /// The report's numbers as `valid_*` metrics for the training loop (its task's metrics).
    pub fn as_metrics(&self) -> std::collections::BTreeMap<String, f64> {
        self.task()
            .logic()
            .metrics()
            .iter()
            .filter_map(|m| (m.read)(self).map(|v| (m.name.to_string(), v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_match_scipy() {
        // scipy.stats.pearsonr and spearmanr (ties ranked by their mean).
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 2.5];
        let y = [5.0, 6.0, 7.0, 8.0, 7.0, 6.0];
        assert!((pearson(&x, &y) - 0.8341060116016319).abs() < 1e-12);
        assert!((spearman(&x, &y) - 0.8827348295047495).abs() < 1e-12);
        assert_eq!(pearson(&x, &[1.0; 6]), 0.0);
    }

    #[test]
    fn multi_label_scores_match_scikit_learn() {
        // sklearn: y_true=[[1,0,1],[0,1,0],[1,1,0]], y_pred=[[1,0,0],[0,1,1],[1,0,0]]
        // f1_score(average='micro') = 0.6666..., average='macro' = (0.6667+0.6667+0)/3 ... see below
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let t = vec![
            vec![true, false, true],
            vec![false, true, false],
            vec![true, true, false],
        ];
        let p = vec![
            vec![true, false, false],
            vec![false, true, true],
            vec![true, false, false],
        ];
        let r = MultiLabelReport::new(&labels, &t, &p, 0.5);
        // tp=3 (a,a,b), fp=1 (c), fn=2 (c, b): micro P=3/4, R=3/5, F1=2/3
        assert!((r.micro_f1 - 2.0 / 3.0).abs() < 1e-12);
        // a: P=R=1 -> 1; b: P=1, R=1/2 -> 2/3; c: P=0, R=0 -> 0
        assert!((r.macro_f1 - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((r.hamming_loss - 3.0 / 9.0).abs() < 1e-12);
        assert!((r.subset_accuracy - 0.0).abs() < 1e-12);
        assert_eq!(r.per_label[0].support, 2);
    }

    #[test]
    fn regression_scores_match_scikit_learn() {
        // sklearn: y_true=[3,-0.5,2,7], y_pred=[2.5,0.0,2,8]: MAE 0.5, MSE 0.375, R2 0.9486081370449679
        let r = RegressionReport::new(&[3.0, -0.5, 2.0, 7.0], &[2.5, 0.0, 2.0, 8.0]);
        assert!((r.mae - 0.5).abs() < 1e-12);
        assert!((r.rmse - 0.375f64.sqrt()).abs() < 1e-12);
        assert!((r.r2 - 0.9486081370449679).abs() < 1e-12);
    }

    #[test]
    fn matches_hand_computed_scores() {
        // sklearn: y_true=[0,0,0,1,1,2], y_pred=[0,0,1,1,2,2]
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let report = EvalReport::new(&labels, &[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2]);
        assert_eq!(
            report.confusion_matrix,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert!((report.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // per class f1: a = 0.8, b = 0.5, c = 2/3 -> macro = 0.6555...
        let f1: Vec<f64> = report.per_class.iter().map(|c| c.f1).collect();
        assert!((f1[0] - 0.8).abs() < 1e-12 && (f1[1] - 0.5).abs() < 1e-12);
        assert!((report.macro_f1 - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(report.per_class[0].support, 3);
    }

    #[test]
    fn never_predicted_class_scores_zero_without_nan() {
        let labels: Vec<String> = ["x", "y"].map(String::from).to_vec();
        let report = EvalReport::new(&labels, &[0, 1, 1], &[0, 0, 0]);
        assert_eq!(report.per_class[1].precision, 0.0);
        assert_eq!(report.per_class[1].f1, 0.0);
        assert!(report.to_table().contains("confusion matrix"));
    }
}
