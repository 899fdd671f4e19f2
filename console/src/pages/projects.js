// Projects: the list and a new one; a project's settings, its API keys, and its deletion.
import { api } from '../api.js';
import { field, fill, h, notice, when } from '../dom.js';

const SETTING_HINTS = {
  rate_limit_per_minute: 'Ingestion requests per minute',
  rate_limit_per_hour: 'Ingestion requests per hour',
  daily_quota: 'Logs per UTC day',
  retention_days: 'Days logs are kept',
  max_queue_depth: 'Logs waiting to be written before ingestion answers 503',
};

function label(name) {
  const text = name.replace(/_/g, ' ');
  return text[0].toUpperCase() + text.slice(1);
}

function failure(status, error) {
  status.replaceChildren(notice(error.describe ? error.describe() : String(error)));
}

function projectList(ctx) {
  const name = h('input', { name: 'name', required: true, maxlength: 128, placeholder: 'checkout-service' });
  const status = h('div');
  const create = h('form', {
    class: 'inline',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const project = await api('POST', '/v1/projects', { body: { name: name.value } });
        await ctx.reload();
        ctx.go(`/projects/${project.id}`);
      } catch (error) {
        failure(status, error);
      }
    },
  }, field('New project', name), h('button', { type: 'submit' }, 'Create project'));
  const rows = ctx.session.projects.map((p) => h('tr', {},
    h('td', {}, h('a', { href: `#/p/${p.id}/explore` }, p.name)),
    h('td', {}, when(p.created_at)),
    h('td', {}, h('a', { href: `#/projects/${p.id}` }, 'Settings and keys'))));
  return h('section', { class: 'card' },
    h('h1', {}, 'Projects'),
    ctx.session.projects.length
      ? h('div', { class: 'scroll' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Created'), h('th', {}, ''))),
        h('tbody', {}, rows)))
      : h('p', {}, 'No project yet: create one to get an API key and send logs.'),
    create, status);
}

function settingsForm(ctx, project) {
  const name = h('input', { name: 'name', value: project.name, required: true, maxlength: 128 });
  const inputs = Object.entries(project.settings).map(([key, value]) => [key,
    h('input', { name: key, type: 'number', min: 1, step: 1, value: String(value), inputmode: 'numeric' })]);
  const status = h('div');
  return h('form', {
    class: 'card',
    onsubmit: async (e) => {
      e.preventDefault();
      const settings = Object.fromEntries(inputs.map(([key, input]) => [key, Number(input.value)]));
      try {
        await api('PATCH', `/v1/projects/${project.id}`, { body: { name: name.value, settings } });
        await ctx.reload();
        status.replaceChildren(notice('Saved.', 'ok'));
      } catch (error) {
        failure(status, error);
      }
    },
  },
  h('h2', {}, 'Settings'),
  h('div', { class: 'grid' }, field('Name', name), inputs.map(([key, input]) => field(label(key), input, SETTING_HINTS[key]))),
  status,
  h('button', { type: 'submit' }, 'Save settings'));
}

function keysSection(project) {
  const list = h('tbody');
  const status = h('div');
  const shown = h('div', { 'aria-live': 'polite' });
  const load = async () => {
    try {
      const { keys } = await api('GET', `/v1/projects/${project.id}/keys`);
      fill(list, keys.map((k) => h('tr', { class: k.revoked_at ? 'revoked' : '' },
        h('td', {}, k.name ?? '—'),
        h('td', {}, h('code', {}, `${k.prefix}…`)),
        h('td', {}, k.scopes.join(', ')),
        h('td', {}, when(k.created_at)),
        h('td', {}, k.last_used_at ? when(k.last_used_at) : 'never'),
        h('td', {}, k.revoked_at ? `revoked ${when(k.revoked_at)}` : h('button', {
          type: 'button',
          class: 'danger small',
          'aria-label': `Revoke key ${k.name ?? k.prefix}`,
          onclick: async () => {
            if (!window.confirm(`Revoke the key ${k.prefix}…? Clients using it are refused from the next request on.`)) return;
            try {
              await api('DELETE', `/v1/projects/${project.id}/keys/${k.id}`);
              await load();
            } catch (error) {
              failure(status, error);
            }
          },
        }, 'Revoke')))));
    } catch (error) {
      failure(status, error);
    }
  };
  const name = h('input', { name: 'key-name', maxlength: 128, placeholder: 'production' });
  const ingest = h('input', { type: 'checkbox', name: 'scope-ingest', checked: true });
  const query = h('input', { type: 'checkbox', name: 'scope-query' });
  const create = h('form', {
    class: 'inline',
    onsubmit: async (e) => {
      e.preventDefault();
      const scopes = [ingest.checked && 'ingest', query.checked && 'query'].filter(Boolean);
      try {
        const key = await api('POST', `/v1/projects/${project.id}/keys`, { body: { name: name.value || undefined, scopes } });
        const text = h('input', { readonly: true, value: key.key, class: 'key', 'aria-label': 'The new API key', id: 'new-key' });
        const copy = h('button', {
          type: 'button',
          onclick: async () => {
            text.select();
            try { await navigator.clipboard.writeText(key.key); copy.textContent = 'Copied'; } catch { copy.textContent = 'Press Ctrl+C'; }
          },
        }, 'Copy');
        fill(shown, h('div', { class: 'notice notice-ok', role: 'status' },
          h('p', {}, h('strong', {}, 'Your new key. '), 'It is shown this once: copy it now.'),
          h('div', { class: 'inline' }, text, copy)));
        name.value = '';
        await load();
      } catch (error) {
        failure(status, error);
      }
    },
  },
  field('Key name', name),
  h('fieldset', { class: 'scopes' }, h('legend', {}, 'Scopes'),
    h('label', {}, ingest, ' ingest'), h('label', {}, query, ' query')),
  h('button', { type: 'submit' }, 'Create key'));
  load();
  return h('section', { class: 'card' }, h('h2', {}, 'API keys'), create, shown, status,
    h('div', { class: 'scroll' }, h('table', { class: 'keys' },
      h('thead', {}, h('tr', {}, ['Name', 'Key', 'Scopes', 'Created', 'Last used', ''].map((t) => h('th', {}, t)))),
      list)));
}

function deleteSection(ctx, project) {
  const confirmName = h('input', { name: 'confirm', autocomplete: 'off' });
  const status = h('div');
  const button = h('button', { type: 'submit', class: 'danger', disabled: true }, 'Delete project');
  confirmName.addEventListener('input', () => { button.disabled = confirmName.value !== project.name; });
  return h('form', {
    class: 'card danger-zone',
    onsubmit: async (e) => {
      e.preventDefault();
      if (confirmName.value !== project.name) return;
      try {
        await api('DELETE', `/v1/projects/${project.id}`);
        localStorage.removeItem('ledger.project');
        await ctx.reload();
        ctx.go('/projects');
      } catch (error) {
        failure(status, error);
      }
    },
  },
  h('h2', {}, 'Delete this project'),
  h('p', {}, 'Its keys stop working at once and its logs can no longer be read. Type the project\'s name to confirm.'),
  field(`Project name (${project.name})`, confirmName), status, button);
}

export function render(ctx) {
  if (!ctx.projectId) return projectList(ctx);
  const project = ctx.session.projects.find((p) => p.id === ctx.projectId);
  if (!project) return h('section', { class: 'card' }, notice('No such project.'), h('a', { href: '#/projects' }, 'All projects'));
  return h('div', { class: 'stack' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/projects' }, 'Projects'), ' / ', project.name),
    h('h1', {}, project.name),
    h('p', { class: 'aside' }, 'Project id ', h('code', {}, project.id)),
    keysSection(project),
    settingsForm(ctx, project),
    deleteSection(ctx, project));
}
