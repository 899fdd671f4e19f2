// The console's shell: the session, the hash router (#/p/<project>/explore?…), the header and navigation.
// Each page is a module exporting `render(ctx)` that returns its element; pages read and write their state
// in the hash's query string, so every view is a link that can be shared and reloaded.
import 'uplot/dist/uPlot.min.css';
import './app.css';
import { api, setSession, whenSignedOut } from './api.js';
import { fill, h } from './dom.js';
import * as auth from './pages/auth.js';
import * as projects from './pages/projects.js';
import * as explore from './pages/explore.js';
import * as errors from './pages/errors.js';
import * as overview from './pages/overview.js';
import * as usage from './pages/usage.js';
import * as alerts from './pages/alerts.js';

const root = document.getElementById('app');
const session = { user: null, projects: [] };

const PROJECT_PAGES = { explore, errors, overview, usage, alerts };
const TITLES = { explore: 'Explore', errors: 'Errors', overview: 'Overview', usage: 'Usage', alerts: 'Alerts' };

/** The hash as a route: its path parts and query. */
export function route() {
  const [path, query = ''] = window.location.hash.replace(/^#/, '').split('?');
  return { parts: path.split('/').filter(Boolean), params: new URLSearchParams(query) };
}

export function go(path, params) {
  const query = params ? new URLSearchParams([...params].filter(([, v]) => v !== '' && v != null)).toString() : '';
  const target = `#${path}${query ? `?${query}` : ''}`;
  if (window.location.hash === target) render();
  else window.location.hash = target;
}

async function loadProjects() {
  const body = await api('GET', '/v1/projects');
  session.projects = body.projects;
}

function signedOut() {
  session.user = null;
  setSession(null);
  go('/signin');
}
whenSignedOut(signedOut);

async function signOut() {
  try {
    await api('DELETE', '/console/session');
  } finally {
    signedOut();
  }
}

function header(projectId, page) {
  const current = session.projects.find((p) => p.id === projectId);
  const picker = h('select', {
    'aria-label': 'Project',
    onchange: (e) => go(`/p/${e.target.value}/${page in PROJECT_PAGES ? page : 'explore'}`),
  },
  current ? null : h('option', { value: '' }, 'Choose a project'),
  session.projects.map((p) => h('option', { value: p.id, selected: p.id === projectId }, p.name)));
  const link = (to, label, active) => h('a', { href: `#${to}`, 'aria-current': active ? 'page' : null }, label);
  const nav = current
    ? Object.keys(PROJECT_PAGES).map((p) => link(`/p/${current.id}/${p}`, TITLES[p], page === p))
    : [];
  return h('header', { class: 'top' },
    h('a', { class: 'brand', href: '#/' }, 'Ledger'),
    session.projects.length ? picker : null,
    h('nav', { 'aria-label': 'Pages' }, nav, link('/projects', 'Projects', page === 'projects')),
    h('span', { class: 'who' }, session.user.email),
    h('button', { type: 'button', class: 'quiet', onclick: signOut }, 'Sign out'));
}

let rendering = 0;
// What the page on screen must stop when another replaces it (a live tail's connection).
let leaving = [];

async function render() {
  const ticket = ++rendering;
  for (const stop of leaving.splice(0)) stop();
  const { parts, params } = route();
  if (parts[0] === 'signin' || parts[0] === 'signup') {
    if (session.user) return go('/');
    fill(root, auth.render({ mode: parts[0], signedIn }));
    return undefined;
  }
  if (!session.user) return go('/signin');
  const ctx = {
    session, params, go, reload: loadProjects, ticket: () => ticket === rendering, onLeave: (stop) => leaving.push(stop),
  };
  let page;
  let projectId = null;
  let name;
  if (parts[0] === 'p' && parts[1]) {
    projectId = parts[1];
    name = parts[2] in PROJECT_PAGES ? parts[2] : 'explore';
    const project = session.projects.find((p) => p.id === projectId);
    if (!project) return go('/projects');
    localStorage.setItem('ledger.project', projectId);
    page = PROJECT_PAGES[name].render({ ...ctx, project });
  } else if (parts[0] === 'projects') {
    name = 'projects';
    const last = localStorage.getItem('ledger.project');
    projectId = parts[1] ?? (session.projects.some((p) => p.id === last) ? last : session.projects[0]?.id);
    page = projects.render({ ...ctx, projectId: parts[1] });
  } else {
    const last = localStorage.getItem('ledger.project');
    const project = session.projects.find((p) => p.id === last) ?? session.projects[0];
    return go(project ? `/p/${project.id}/explore` : '/projects');
  }
  document.title = `${name === 'projects' ? 'Projects' : TITLES[name]} · Ledger`;
  fill(root, header(projectId, name), h('main', { id: 'main' }, page));
  return undefined;
}

async function signedIn(body) {
  session.user = body.user;
  setSession(body);
  await loadProjects();
  go('/');
}

async function start() {
  try {
    const body = await api('GET', '/console/session');
    session.user = body.user;
    setSession(body);
    await loadProjects();
  } catch {
    session.user = null;
  }
  window.addEventListener('hashchange', () => render());
  render();
}

start();
