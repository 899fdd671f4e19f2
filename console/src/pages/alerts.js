// Alerts: the project's rules (state, last fired), a new rule of any kind to a webhook, Slack or PagerDuty,
// enable or disable, a test notification, delete, and each rule's delivery log.
import { api } from '../api.js';
import { field, fill, h, notice, when } from '../dom.js';

const KINDS = {
  error_rate: {
    label: 'Error rate above a threshold',
    params: [['threshold_percent', 'Threshold (%)', 5], ['window_secs', 'Window (seconds)', 300], ['min_logs', 'At least this many logs', 100]],
  },
  query_count: {
    label: 'Logs matching a search above a count',
    params: [['threshold', 'More than (logs)', 20], ['window_secs', 'Window (seconds)', 60]],
  },
  new_error: { label: 'A new error (never seen before)', params: [] },
  regression: { label: 'An error back after a quiet period', params: [['quiet_secs', 'Quiet for (seconds)', 86400]] },
};

function failure(status, error) {
  status.replaceChildren(notice(error.describe ? error.describe() : String(error)));
}

function createForm(project, reload) {
  const status = h('div');
  const name = h('input', { name: 'alert-name', required: true, maxlength: 200, placeholder: 'Payment errors' });
  const kind = h('select', { name: 'alert-kind' }, Object.entries(KINDS).map(([k, v]) => h('option', { value: k }, v.label)));
  const params = h('div', { class: 'grid' });
  let inputs = [];
  const queryText = h('input', { name: 'alert-q', placeholder: 'timeout' });
  const queryService = h('input', { name: 'alert-service', placeholder: 'api' });
  const minLevel = h('select', { name: 'alert-min-level' }, ['ERROR', 'CRITICAL'].map((l) => h('option', { value: l }, l)));
  const showParams = () => {
    inputs = KINDS[kind.value].params.map(([key, label, value]) => [key, h('input', { type: 'number', min: 0, step: 'any', value: String(value), name: key })]);
    fill(params,
      inputs.map(([key, input]) => field(KINDS[kind.value].params.find(([k]) => k === key)[1], input)),
      kind.value === 'query_count' ? [field('Search (q)', queryText), field('Service', queryService)] : null,
      kind.value === 'new_error' ? field('At least', minLevel) : null);
  };
  kind.addEventListener('change', showParams);
  showParams();
  const channelType = h('select', { name: 'channel-type' }, ['webhook', 'slack', 'pagerduty'].map((t) => h('option', { value: t }, t)));
  const url = h('input', { name: 'channel-url', type: 'url', placeholder: 'https://hooks.example.com/ledger' });
  const routingKey = h('input', { name: 'routing-key', placeholder: 'PagerDuty integration key' });
  const routingField = field('Routing key', routingKey);
  const syncChannel = () => { routingField.hidden = channelType.value !== 'pagerduty'; };
  channelType.addEventListener('change', syncChannel);
  syncChannel();
  const cooldown = h('input', { type: 'number', min: 0, value: '300', name: 'cooldown' });
  const secretBox = h('div', { 'aria-live': 'polite' });
  return h('form', {
    class: 'card',
    onsubmit: async (e) => {
      e.preventDefault();
      const values = Object.fromEntries(inputs.map(([key, input]) => [key, Number(input.value)]));
      if (kind.value === 'query_count') {
        values.query = {};
        if (queryText.value.trim()) values.query.q = queryText.value.trim();
        if (queryService.value.trim()) values.query.service = queryService.value.trim();
      }
      if (kind.value === 'new_error') values.min_level = minLevel.value;
      const channel = { type: channelType.value };
      if (url.value.trim()) channel.url = url.value.trim();
      if (channelType.value === 'pagerduty') channel.routing_key = routingKey.value.trim();
      try {
        const rule = await api('POST', `/v1/projects/${project.id}/alerts`, {
          body: { name: name.value, kind: kind.value, params: values, channel, cooldown_secs: Number(cooldown.value) },
        });
        status.replaceChildren(notice(`Created “${rule.name}”.`, 'ok'));
        if (rule.secret) {
          fill(secretBox, h('div', { class: 'notice notice-ok', role: 'status' },
            h('p', {}, h('strong', {}, 'Signing secret. '), 'Shown this once: your receiver checks X-Ledger-Signature with it.'),
            h('input', { readonly: true, value: rule.secret, class: 'key', 'aria-label': 'The signing secret' })));
        }
        name.value = '';
        await reload();
      } catch (error) {
        failure(status, error);
      }
    },
  },
  h('h2', {}, 'New alert'),
  h('div', { class: 'grid' }, field('Name', name), field('When', kind)),
  params,
  h('div', { class: 'grid' }, field('Send to', channelType), field('URL', url, 'Not needed for PagerDuty'), routingField,
    field('Cooldown (seconds)', cooldown)),
  status, secretBox,
  h('button', { type: 'submit' }, 'Create alert'));
}

function deliveriesOf(project, rule) {
  const box = h('div', { class: 'deliveries' }, h('p', { class: 'aside' }, 'Loading…'));
  api('GET', `/v1/projects/${project.id}/alerts/${rule.id}/deliveries`).then(({ deliveries }) => {
    fill(box, deliveries.length
      ? h('table', { class: 'deliveries' },
        h('thead', {}, h('tr', {}, ['Time', 'Status', 'Attempts', 'Answer', 'Delivered'].map((t) => h('th', {}, t)))),
        h('tbody', {}, deliveries.map((d) => h('tr', {},
          h('td', {}, when(d.at)), h('td', {}, d.status), h('td', { class: 'num' }, String(d.attempts)),
          h('td', {}, d.response_status == null ? '—' : String(d.response_status)),
          h('td', {}, d.delivered ? 'yes' : 'no')))))
      : h('p', { class: 'aside' }, 'Nothing sent yet.'));
  }).catch((error) => failure(box, error));
  return box;
}

export function render(ctx) {
  const { project } = ctx;
  const list = h('section', { class: 'card', 'aria-busy': 'true' }, h('p', { class: 'aside' }, 'Loading…'));
  const load = async () => {
    try {
      const { alerts } = await api('GET', `/v1/projects/${project.id}/alerts`);
      if (!ctx.ticket()) return;
      list.removeAttribute('aria-busy');
      const status = h('div');
      const rows = alerts.map((rule) => {
        const detail = h('tr', { class: 'detail-row', hidden: true }, h('td', { colspan: '5' }));
        const row = h('tr', {},
          h('td', {}, rule.name, h('div', { class: 'aside' }, KINDS[rule.kind]?.label ?? rule.kind)),
          h('td', {}, rule.channel.type),
          h('td', {}, h('span', { class: `tag ${rule.state === 'firing' ? 'tag-new' : ''}` }, rule.enabled ? rule.state : 'disabled')),
          h('td', {}, rule.last_fired_at ? when(rule.last_fired_at) : 'never'),
          h('td', { class: 'actions' },
            h('button', {
              type: 'button', class: 'small', 'aria-label': `Send a test notification for ${rule.name}`,
              onclick: async () => {
                try {
                  await api('POST', `/v1/projects/${project.id}/alerts/${rule.id}/test`);
                  status.replaceChildren(notice(`Test notification for “${rule.name}” on its way.`, 'ok'));
                } catch (error) { failure(status, error); }
              },
            }, 'Test'), ' ',
            h('button', {
              type: 'button', class: 'small', 'aria-label': `Deliveries of ${rule.name}`,
              onclick: () => {
                detail.hidden = !detail.hidden;
                if (!detail.hidden) fill(detail.firstChild, deliveriesOf(project, rule));
              },
            }, 'Deliveries'), ' ',
            h('button', {
              type: 'button', class: 'small', 'aria-label': `${rule.enabled ? 'Disable' : 'Enable'} ${rule.name}`,
              onclick: async () => {
                try {
                  await api('PATCH', `/v1/projects/${project.id}/alerts/${rule.id}`, { body: { enabled: !rule.enabled } });
                  await load();
                } catch (error) { failure(status, error); }
              },
            }, rule.enabled ? 'Disable' : 'Enable'), ' ',
            h('button', {
              type: 'button', class: 'small danger', 'aria-label': `Delete ${rule.name}`,
              onclick: async () => {
                if (!window.confirm(`Delete the alert “${rule.name}”?`)) return;
                try {
                  await api('DELETE', `/v1/projects/${project.id}/alerts/${rule.id}`);
                  await load();
                } catch (error) { failure(status, error); }
              },
            }, 'Delete')));
        return [row, detail];
      });
      fill(list, h('h2', {}, 'Alerts'), status, alerts.length
        ? h('div', { class: 'scroll' }, h('table', { class: 'alerts' },
          h('thead', {}, h('tr', {}, ['Alert', 'Channel', 'State', 'Last fired', ''].map((t) => h('th', {}, t)))),
          h('tbody', {}, rows)))
        : h('p', {}, 'No alert yet: create one below to hear about new errors before your users do.'));
    } catch (error) {
      failure(list, error);
    }
  };
  load();
  return h('div', { class: 'stack' }, h('h1', {}, 'Alerts'), list, createForm(project, load));
}
