/**
 * Builds the API client configuration the way kube-proxy does (client-go's
 * BuildConfigFromFlags): a kubeconfig file if given, else the Pod's service account
 * (in-cluster), and --master overriding the server URL in either case. Reads files and the
 * environment; never contacts the API server.
 */
import { existsSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { KubeConfig, type Cluster } from '@kubernetes/client-node';

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export class KubeConfigError extends Error {
  readonly code = 'FERRY_ERR_KUBECONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'KubeConfigError';
  }
}

export interface KubeConfigOptions {
  readonly kubeconfig?: string | undefined;
  readonly master?: string | undefined;
  /** Defaults to process.env. */
  readonly env?: NodeJS.ProcessEnv;
  /** Prefix of the service-account directory, for tests (client-node's pathPrefix). */
  readonly inClusterPathPrefix?: string;
}

/** client-node refuses plain http unless TLS verification is off; http has none to skip. */
function isPlainHTTP(server: string): boolean {
  return server.startsWith('http://');
}

/**
 * client-go's rest.InClusterConfig always speaks https to KUBERNETES_SERVICE_HOST:PORT;
 * client-node's loadFromCluster picks http:// for ports 80, 8080 and 8001, which would send the
 * service-account token in cleartext to an API server (or LB) listening with TLS on such a port.
 */
function inClusterHTTPS(kc: KubeConfig, host: string, port: string): KubeConfig {
  const server = `https://${isIPv6(host) ? `[${host}]` : host}:${port}`;
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: kc.clusters.map((c): Cluster => ({ ...c, server, skipTLSVerify: false })),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return out;
}

/**
 * client-go talks plain http to an http:// server as given; client-node refuses unless
 * skipTLSVerify is set. Setting it for http:// clusters restores client-go's behaviour and
 * weakens nothing: there is no TLS on such a connection.
 */
function allowPlainHTTP(kc: KubeConfig): KubeConfig {
  if (!kc.clusters.some((c) => isPlainHTTP(c.server) && !c.skipTLSVerify)) return kc;
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: kc.clusters.map((c): Cluster => (isPlainHTTP(c.server) ? { ...c, skipTLSVerify: true } : c)),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return out;
}

function withServer(kc: KubeConfig, server: string): KubeConfig {
  const current = kc.getCurrentCluster();
  if (!current) throw new KubeConfigError('the kubeconfig has no current cluster to point --master at');
  const out = new KubeConfig();
  out.loadFromOptions({
    clusters: kc.clusters.map((c): Cluster => (c.name === current.name ? { ...c, server, skipTLSVerify: isPlainHTTP(server) || c.skipTLSVerify } : c)),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return out;
}

export function loadKubeConfig(opts: KubeConfigOptions): KubeConfig {
  const env = opts.env ?? process.env;
  const kc = new KubeConfig();
  if (opts.kubeconfig) {
    try {
      kc.loadFromFile(opts.kubeconfig);
    } catch (e) {
      throw new KubeConfigError(`--kubeconfig: cannot load ${opts.kubeconfig}: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!kc.getCurrentCluster()) throw new KubeConfigError(`--kubeconfig: ${opts.kubeconfig} has no current context/cluster`);
    return opts.master ? withServer(kc, opts.master) : allowPlainHTTP(kc);
  }
  const prefix = opts.inClusterPathPrefix ?? '';
  const inCluster = !!env.KUBERNETES_SERVICE_HOST && !!env.KUBERNETES_SERVICE_PORT && existsSync(`${prefix}${SA_DIR}/token`);
  if (inCluster) {
    // client-node reads the variables from process.env; a custom env is for tests only.
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = env.KUBERNETES_SERVICE_HOST;
    process.env.KUBERNETES_SERVICE_PORT = env.KUBERNETES_SERVICE_PORT;
    try {
      kc.loadFromCluster(prefix);
    } finally {
      if (saved.host === undefined) delete process.env.KUBERNETES_SERVICE_HOST;
      else process.env.KUBERNETES_SERVICE_HOST = saved.host;
      if (saved.port === undefined) delete process.env.KUBERNETES_SERVICE_PORT;
      else process.env.KUBERNETES_SERVICE_PORT = saved.port;
    }
    const https = inClusterHTTPS(kc, env.KUBERNETES_SERVICE_HOST!, env.KUBERNETES_SERVICE_PORT!);
    // Only an explicit --master may be plain http (as with client-go, the operator's choice).
    return opts.master ? withServer(https, opts.master) : https;
  }
  if (opts.master) {
    kc.loadFromClusterAndUser({ name: 'master', server: opts.master, skipTLSVerify: isPlainHTTP(opts.master) }, { name: 'anonymous' });
    return kc;
  }
  throw new KubeConfigError(
    'no --kubeconfig or --master given and not running in a Pod ' +
      `(KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset or ${SA_DIR}/token missing)`,
  );
}
