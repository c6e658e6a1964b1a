//! The Kubernetes manifests, offline (no API server can run here): the kustomize base and
//! every overlay render with `kubectl kustomize`, every object validates strictly against
//! the Kubernetes schemas (PyPI `kubernetes-validate`, in the test venv), and every Pod
//! template carries the security settings the deployment promises.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv_bin(name: &str) -> PathBuf {
    let bin = repo().join("target/pyvenv/bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run ./scripts/test.sh, which installs it",
        bin.display()
    );
    bin
}

/// `kubectl kustomize DIR`, as YAML text.
fn render(dir: &str) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .expect("kubectl (run ./scripts/test.sh, which installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The rendered objects as JSON (through the venv's PyYAML).
fn objects(yaml: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(venv_bin("python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write yaml");
    let out = child.wait_with_output().expect("python output");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("json")
}

fn validate(name: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} does not validate:\n{text}");
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Every Pod template: no service-account token, and each container (init containers too)
/// without privilege escalation, on a read-only root, with every capability dropped and
/// resource limits.
fn check_pod_security(what: &str, spec: &Value) {
    assert_eq!(spec["automountServiceAccountToken"], false, "{what}");
    assert_ne!(spec["hostPID"], true, "{what}: hostPID is not needed");
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array())
        .flatten();
    for c in containers {
        let name = format!("{what}/{}", c["name"]);
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_ne!(sc["privileged"], true, "{name}");
        let drop: Vec<&str> = sc["capabilities"]["drop"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(drop, ["ALL"], "{name}");
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{name} adds capabilities"
        );
        for r in ["cpu", "memory"] {
            assert!(
                c["resources"]["limits"][r].is_string(),
                "{name}: no {r} limit"
            );
            assert!(
                c["resources"]["requests"][r].is_string(),
                "{name}: no {r} request"
            );
        }
    }
}

fn check(objs: &[Value]) {
    for o in objs {
        assert_eq!(
            o["metadata"]["namespace"].as_str().unwrap_or("mcpwatch"),
            "mcpwatch"
        );
        if let Some(spec) = o["spec"]["template"]["spec"].as_object() {
            check_pod_security(
                o["metadata"]["name"].as_str().unwrap_or("?"),
                &Value::Object(spec.clone()),
            );
        }
    }
    let collector = find(objs, "StatefulSet", "mcpwatch-collector");
    assert_eq!(collector["spec"]["replicas"], 1, "one writer owns SQLite");
    let pod = &collector["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let claim = &collector["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert!(c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "data" && m["mountPath"] == "/var/lib/mcpwatch"));
    for svc in ["mcpwatch-collector-ingest", "mcpwatch-collector-api"] {
        find(objs, "Service", svc);
    }
    let ingress = find(objs, "Ingress", "mcpwatch-collector");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "mcpwatch-collector-api"
    );
    find(objs, "PodDisruptionBudget", "mcpwatch-collector");
    find(objs, "ConfigMap", "mcpwatch-collector");
    find(objs, "Secret", "mcpwatch-enroll-token");
    for sa in ["mcpwatch-collector", "mcpwatch-agent"] {
        assert_eq!(
            find(objs, "ServiceAccount", sa)["automountServiceAccountToken"],
            false
        );
    }
    // Agents reach the collector's ingest; the collector's API only from agents and the
    // ingress controller.
    let np = find(objs, "NetworkPolicy", "mcpwatch-collector");
    let from = &np["spec"]["ingress"];
    assert_eq!(
        from[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "mcpwatch-agent"
    );
    assert_eq!(
        from[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
    assert_eq!(
        from[1]["ports"].as_array().unwrap().len(),
        1,
        "the ingress reaches the API only"
    );
    let agent_np = find(objs, "NetworkPolicy", "mcpwatch-agent");
    assert_eq!(agent_np["spec"]["ingress"], serde_json::json!([]));
    // The agent enrolls on first start, with its node's name.
    let agent = find(objs, "DaemonSet", "mcpwatch-agent");
    let init = &agent["spec"]["template"]["spec"]["initContainers"][0];
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "enroll");
    assert!(args.contains(&"--name=$(NODE_NAME)"), "{args:?}");
    assert_eq!(
        init["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
}

#[test]
fn the_base_and_every_overlay_render_validate_and_keep_pods_locked_down() {
    let base = render("deploy/kubernetes/base");
    validate("base", &base);
    check(&objects(&base));

    let overlays = repo().join("deploy/kubernetes/overlays");
    let mut seen = 0;
    for entry in std::fs::read_dir(&overlays).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let yaml = render(&format!("deploy/kubernetes/overlays/{name}"));
        validate(&name, &yaml);
        check(&objects(&yaml));
        seen += 1;
    }
    assert!(seen >= 1, "no overlay found");
    // The Docker-socket overlay mounts the socket on the nodes labelled for it.
    let docker = objects(&render("deploy/kubernetes/overlays/docker-socket"));
    let pod = &find(&docker, "DaemonSet", "mcpwatch-agent")["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["mcpwatch.io/docker-socket"], "true");
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["hostPath"]["path"] == "/var/run/docker.sock"
            && v["hostPath"]["type"] == "Socket"));
}

#[test]
fn the_configs_in_the_manifests_pass_check_config_with_their_files_in_place() {
    // The TOML as mounted, with the mount points moved into a temp dir that holds what the
    // cluster's Secrets and volumes would: the real binaries check every key and file.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pki = mcpwatch_tests::Pki::new(&root.join("dev-pki"));
    let agent = pki.agent("node-1");
    let place = |from: &Path, to: &str| {
        let to = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    place(&pki.ca(), "/etc/mcpwatch/pki/ca.crt");
    place(&pki.dir.join("collector.crt"), "/etc/mcpwatch/pki/tls.crt");
    place(&pki.dir.join("collector.key"), "/etc/mcpwatch/pki/tls.key");
    place(&pki.dir.join("ca.key"), "/etc/mcpwatch/ca-key/ca.key");
    place(&pki.ca(), "/var/lib/mcpwatch/agent/tls/ca.crt");
    place(&agent.cert, "/var/lib/mcpwatch/agent/tls/agent.crt");
    place(&agent.key, "/var/lib/mcpwatch/agent/tls/agent.key");
    std::fs::create_dir_all(root.join("etc/mcpwatch/secrets")).unwrap();
    std::fs::write(
        root.join("etc/mcpwatch/secrets/federation-token"),
        "t0ken\n",
    )
    .unwrap();
    let base = repo().join("deploy/kubernetes/base");
    for (bin, file) in [
        ("mcpwatch-collector", "collector.toml"),
        ("mcpwatch-agent", "agent.toml"),
    ] {
        let text = std::fs::read_to_string(base.join(file)).unwrap();
        let moved = text
            .replace(
                "\"/etc/mcpwatch/",
                &format!("\"{}/etc/mcpwatch/", root.display()),
            )
            .replace(
                "\"/var/lib/mcpwatch/",
                &format!("\"{}/var/lib/mcpwatch/", root.display()),
            );
        let config = root.join(file);
        std::fs::write(&config, moved).unwrap();
        let out = Command::new(mcpwatch_tests::bin(bin))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
