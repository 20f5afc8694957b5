// ServiceCIDRs end to end through the real bin/ferry (--dry-run, loopback only): the simulated
// API server's default ServiceCIDR `kubernetes` (from its --service-cidr ranges) reaches the
// planned table as `serviceCIDRs` per family; a ServiceCIDR created with kubectl is added, and
// its deletion removes it again. What the nftables compiler does with the field is docs/ir.md's.
import t from 'tap';
import { dryRunCluster, waitFor } from '../proxy/proc.js';

t.test('the default and added ServiceCIDRs reach the planned table', async (t) => {
  const { kubectl, ferry } = await dryRunCluster(t, 'servicecidrs', ['198.18.64.0/18', '2001:db8:2::/112']);

  const listed = (await kubectl(['get', 'servicecidrs'])).stdout;
  t.match(listed, /kubernetes\s+198\.18\.64\.0\/18,2001:db8:2::\/112/, 'kubectl get servicecidrs shows the default one');

  // ferry waits up to 30 s for its Node before the first plan.
  await kubectl(['apply', '-f', '-'], 'apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 192.0.2.11}]}\n');
  const p = await ferry();
  const cidrsOf = (fam: '4' | '6') => (p.last()?.families[fam] as { serviceCIDRs?: readonly string[] } | undefined)?.serviceCIDRs;
  const seen = () => `IPv4 ${JSON.stringify(cidrsOf('4'))} IPv6 ${JSON.stringify(cidrsOf('6'))}; stderr:\n${p.tail()}`;
  await waitFor('the default ServiceCIDR in the plan', () => (cidrsOf('4')?.length ? true : undefined), seen);
  t.same(cidrsOf('4'), ['198.18.64.0/18']);
  t.same(cidrsOf('6'), ['2001:db8:2::/112']);

  await kubectl(['apply', '-f', '-'], 'apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: extra}\nspec: {cidrs: [198.18.128.0/24]}\n');
  await waitFor('the added ServiceCIDR in the plan', () => (cidrsOf('4')?.length === 2 ? true : undefined), seen);
  t.same(cidrsOf('4'), ['198.18.128.0/24', '198.18.64.0/18'], 'both IPv4 ranges, sorted');
  await kubectl(['delete', 'servicecidr', 'extra']);
  await waitFor('the deleted ServiceCIDR gone from the plan', () => (cidrsOf('4')?.length === 1 ? true : undefined), seen);
  t.same(cidrsOf('4'), ['198.18.64.0/18']);
});
