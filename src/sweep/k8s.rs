//! The Kubernetes backend: renders an Indexed Job (one completion per row,
//! `parallelism` pods at once) and a ConfigMap holding every row's resolved
//! config keyed by index (`0.toml`, `1.toml`, ...). Each pod runs
//! `ard-pipeline sweep-run --configs /etc/ard-sweep --index $(JOB_COMPLETION_INDEX)`.
//! Nothing is applied: the files are written and the kubectl command printed.

use super::expand::PlannedRun;
use super::spec::SweepFile;

/// Where the ConfigMap is mounted in the pods.
pub const CONFIG_MOUNT: &str = "/etc/ard-sweep";

/// A DNS-1123 name: lowercase letters, digits and '-'.
pub fn dns_name(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(52);
    out.trim_matches('-').to_string()
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The ConfigMap YAML.
pub fn config_map(file: &SweepFile, runs: &[PlannedRun]) -> String {
    let name = format!("ard-sweep-{}-configs", dns_name(&file.sweep.name));
    let mut y = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/name: ard-pipeline\n    ard-pipeline/sweep: {sweep}\ndata:\n",
        ns = yaml_str(&file.sweep.k8s.namespace),
        sweep = yaml_str(&dns_name(&file.sweep.name)),
    );
    for r in runs {
        y.push_str(&format!("  \"{}.toml\": |\n", r.index));
        y.push_str(&format!("    # {}\n", r.name));
        for line in r.toml.lines() {
            if line.is_empty() {
                y.push('\n');
            } else {
                y.push_str(&format!("    {line}\n"));
            }
        }
    }
    y
}

/// The Indexed Job YAML.
pub fn job(file: &SweepFile, runs: &[PlannedRun]) -> String {
    let s = &file.sweep;
    let sweep = dns_name(&s.name);
    let resources = if s.k8s.gpus > 0 {
        format!(
            "          resources:\n            limits:\n              nvidia.com/gpu: {}\n",
            s.k8s.gpus
        )
    } else {
        String::new()
    };
    format!(
        r#"# Sweep {name}: {n} runs, one pod per row; rendered by `ard-pipeline sweep --backend k8s`.
apiVersion: batch/v1
kind: Job
metadata:
  name: ard-sweep-{sweep}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: ard-pipeline
    ard-pipeline/sweep: {sweep_q}
spec:
  completionMode: Indexed
  completions: {n}
  parallelism: {parallel}
  backoffLimit: {backoff}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: ard-pipeline
        ard-pipeline/sweep: {sweep_q}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9187"
    spec:
      restartPolicy: Never
      containers:
        - name: ard-pipeline
          image: {image}
          command: ["ard-pipeline"]
          args: ["sweep-run", "--configs", "{mount}", "--index", "$(JOB_COMPLETION_INDEX)"]
          env:
            - name: JOB_COMPLETION_INDEX
              valueFrom:
                fieldRef:
                  fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
          ports:
            - name: metrics
              containerPort: 9187
{resources}          volumeMounts:
            - name: configs
              mountPath: {mount}
              readOnly: true
            - name: results
              mountPath: {results_mount}
      volumes:
        - name: configs
          configMap:
            name: ard-sweep-{sweep}-configs
        - name: results
          persistentVolumeClaim:
            claimName: {claim}
"#,
        name = s.name,
        n = runs.len(),
        ns = yaml_str(&s.k8s.namespace),
        sweep_q = yaml_str(&sweep),
        parallel = s.parallel,
        backoff = s.retries * runs.len().max(1),
        image = yaml_str(&s.k8s.image),
        mount = CONFIG_MOUNT,
        results_mount = yaml_str(&s.k8s.results_mount),
        claim = yaml_str(&s.k8s.results_claim),
    )
}
