//! Classification metrics: accuracy, macro-F1, a per-class precision/recall/F1/support report and
//! the confusion matrix (rows are true classes, columns predicted), as scikit-learn defines them.

use serde::{Deserialize, Serialize};

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
        let width = self
            .labels
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(9);
        let mut out = format!(
            "n = {}  accuracy = {:.4}  macro-F1 = {:.4}\n\n{:>width$}  precision  recall      f1  support\n",
            self.n, self.accuracy, self.macro_f1, "class"
        );
        for c in &self.per_class {
            out += &format!(
                "{:>width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}\n",
                c.label, c.precision, c.recall, c.f1, c.support
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
