//! The Kubernetes manifests, offline (no API server can run here): the kustomize base and
//! every overlay render with `kubectl kustomize`, every object validates strictly against
//! the Kubernetes schemas (PyPI `kubernetes-validate`, in the test venv), every Pod
//! template carries the security settings the deployment promises (non-root everywhere but
//! the one init container that prepares the agent's hostPath state), and the Docker-socket
//! overlay runs exactly one agent a node.

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

/// The init container that hands the agent's hostPath state directory to the agent's user
/// (the kubelet creates it root-owned, and fsGroup does not apply to hostPath): the one
/// container that runs as root.
const PREPARE: &str = "prepare-state";

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A container's security setting as it applies: its own, else the Pod's.
fn effective<'a>(pod: &'a Value, c: &'a Value, key: &str) -> &'a Value {
    let own = &c["securityContext"][key];
    if own.is_null() {
        &pod["securityContext"][key]
    } else {
        own
    }
}

/// Every Pod template: no service-account token, no hostPID, and each container (init
/// containers too) without privilege escalation, on a read-only root, with every capability
/// dropped, the runtime's seccomp profile and resource limits, and as a non-root user; the
/// one exception, the state directory's preparation, is checked for how little it can do.
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
        assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
        assert_eq!(
            effective(spec, c, "seccompProfile")["type"],
            "RuntimeDefault",
            "{name}"
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
        if c["name"] == PREPARE {
            check_prepare(what, spec, c);
            continue;
        }
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{name} adds capabilities"
        );
        assert_eq!(*effective(spec, c, "runAsNonRoot"), true, "{name}");
        for id in ["runAsUser", "runAsGroup"] {
            let n = effective(spec, c, id).as_u64();
            assert!(n.is_some_and(|n| n != 0), "{name}: {id} {n:?}");
        }
    }
}

/// The state directory's preparation: the first init container, root with CAP_CHOWN and
/// CAP_FOWNER only (no DAC override), mounting nothing but the hostPath directory it hands to
/// the Pod's user and group.
fn check_prepare(what: &str, spec: &Value, c: &Value) {
    let name = format!("{what}/{PREPARE}");
    assert_eq!(
        spec["initContainers"][0]["name"], PREPARE,
        "{name} runs first"
    );
    let add = strs(&c["securityContext"]["capabilities"]["add"]);
    assert!(
        !add.is_empty() && add.iter().all(|a| ["CHOWN", "FOWNER"].contains(a)),
        "{name} adds {add:?}"
    );
    assert!(c["command"].is_null(), "{name}: the image's own binary");
    let args = strs(&c["args"]);
    assert_eq!(args.first(), Some(&"prepare-dir"), "{name}: {args:?}");
    let pod = &spec["securityContext"];
    let owner = format!("--owner={}:{}", pod["runAsUser"], pod["runAsGroup"]);
    assert!(
        args.contains(&owner.as_str()),
        "{name}: {args:?}, not {owner}"
    );
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 1, "{name} mounts the state directory only");
    assert_eq!(mounts[0]["mountPath"], args[1], "{name}");
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mounts[0]["name"])
        .expect("the prepared volume");
    assert!(volume["hostPath"].is_object(), "{name}: {volume}");
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
    // Every agent DaemonSet enrolls on first start with its node's name, keeps its state in
    // the node's hostPath directory, and finds the node's root where its [sampling] host_root says.
    let agents: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "DaemonSet").collect();
    assert!(!agents.is_empty(), "no agent DaemonSet");
    for agent in agents {
        let what = agent["metadata"]["name"].as_str().unwrap();
        let pod = &agent["spec"]["template"]["spec"];
        let inits = pod["initContainers"].as_array().expect("init containers");
        assert_eq!(inits[0]["name"], PREPARE, "{what}");
        let init = inits
            .iter()
            .find(|c| c["name"] == "enroll")
            .unwrap_or_else(|| panic!("{what}: no enroll init container"));
        let args = strs(&init["args"]);
        assert_eq!(args[0], "enroll");
        assert!(args.contains(&"--name=$(NODE_NAME)"), "{what}: {args:?}");
        let node = init["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "NODE_NAME")
            .expect("NODE_NAME");
        assert_eq!(
            node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
            "{what}"
        );
        let volume = |name: &str| {
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{what}: no volume {name}"))
        };
        assert_eq!(
            volume("state")["hostPath"]["path"],
            "/var/lib/mcpwatch/agent",
            "{what}"
        );
        assert_eq!(volume("host-root")["hostPath"]["path"], "/", "{what}");
        assert!(
            pod["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "host-root"
                    && m["mountPath"] == "/host/root"
                    && m["readOnly"] == true),
            "{what}"
        );
        let config = volume("config")["configMap"]["name"].as_str().unwrap();
        let toml = find(objs, "ConfigMap", config)["data"]["agent.toml"]
            .as_str()
            .unwrap();
        assert!(
            toml.contains("\n[sampling]\n") && toml.contains("\nhost_root = \"/host/root\"\n"),
            "{config}: [sampling] host_root is not the mount"
        );
    }
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
    // The Docker-socket overlay: a second agent DaemonSet, with the socket, on the nodes
    // labelled for it, and the base's agent on every other node (NotIn also matches nodes
    // without the label): exactly one agent a node.
    const LABEL: &str = "mcpwatch.io/docker-socket";
    let docker = objects(&render("deploy/kubernetes/overlays/docker-socket"));
    let others = find(&docker, "DaemonSet", "mcpwatch-agent");
    let pod = &others["spec"]["template"]["spec"];
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"],
        serde_json::json!([{"matchExpressions": [
            {"key": LABEL, "operator": "NotIn", "values": ["true"]}
        ]}])
    );
    assert!(pod["nodeSelector"].is_null());
    let ds = find(&docker, "DaemonSet", "mcpwatch-agent-docker");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"][LABEL], "true");
    assert!(pod["affinity"].is_null());
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "docker-socket"
            && v["hostPath"]["path"] == "/var/run/docker.sock"
            && v["hostPath"]["type"] == "Socket"));
    let agent = &pod["containers"][0];
    assert!(agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "docker-socket" && m["mountPath"] == "/var/run/docker.sock"));
    assert!(agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "DOCKER_HOST" && e["value"] == "unix:///var/run/docker.sock"));
    // Non-root: the socket's group reaches the socket.
    assert!(
        pod["securityContext"]["supplementalGroups"]
            .as_array()
            .is_some_and(|g| !g.is_empty()),
        "the socket's group"
    );
    // Its selector does not take the other DaemonSet's pods; its configuration is its own.
    let selector = ds["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let labels = &others["spec"]["template"]["metadata"]["labels"];
    assert!(
        selector.iter().any(|(k, v)| &labels[k] != v),
        "{selector:?}"
    );
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "config" && v["configMap"]["name"] == "mcpwatch-agent-docker"));
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
    // The node's root filesystem, where [sampling] host_root points.
    std::fs::create_dir_all(root.join("host/root")).unwrap();
    let kube = repo().join("deploy/kubernetes");
    for (bin, file) in [
        ("mcpwatch-collector", "base/collector.toml"),
        ("mcpwatch-agent", "base/agent.toml"),
        ("mcpwatch-agent", "overlays/docker-socket/agent.toml"),
    ] {
        let text = std::fs::read_to_string(kube.join(file)).unwrap();
        let moved = text
            .replace(
                "\"/etc/mcpwatch/",
                &format!("\"{}/etc/mcpwatch/", root.display()),
            )
            .replace(
                "\"/var/lib/mcpwatch/",
                &format!("\"{}/var/lib/mcpwatch/", root.display()),
            )
            .replace(
                "\"/host/root\"",
                &format!("\"{}/host/root\"", root.display()),
            );
        let config = root.join(file.replace('/', "-"));
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
    // The Docker-socket agents' configuration is the base's, then their containers.
    let settings = |file: &str| -> Vec<String> {
        std::fs::read_to_string(kube.join(file))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        settings("overlays/docker-socket/agent.toml").starts_with(&settings("base/agent.toml")),
        "overlays/docker-socket/agent.toml does not begin with base/agent.toml's settings"
    );
}
