// Sign in and sign up: the session comes back as an HttpOnly cookie, never to this script.
import { api } from '../api.js';
import { field, h, notice } from '../dom.js';

export function render({ mode, signedIn }) {
  const signup = mode === 'signup';
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true, autofocus: true });
  const password = h('input', {
    type: 'password', name: 'password', required: true, minlength: signup ? 8 : null, maxlength: 72,
    autocomplete: signup ? 'new-password' : 'current-password',
  });
  const status = h('div');
  const submit = h('button', { type: 'submit' }, signup ? 'Create account' : 'Sign in');
  const form = h('form', {
    class: 'card narrow',
    onsubmit: async (e) => {
      e.preventDefault();
      submit.disabled = true;
      status.replaceChildren();
      try {
        const body = await api('POST', signup ? '/console/signup' : '/console/session', {
          body: { email: email.value, password: password.value },
        });
        await signedIn(body);
      } catch (error) {
        status.replaceChildren(notice(error.describe ? error.describe() : String(error)));
        submit.disabled = false;
      }
    },
  },
  h('h1', {}, signup ? 'Create your Ledger account' : 'Sign in to Ledger'),
  field('E-mail', email),
  field('Password', password, signup ? '8 to 72 characters' : null),
  status,
  submit,
  h('p', { class: 'aside' }, signup
    ? ['Have an account? ', h('a', { href: '#/signin' }, 'Sign in')]
    : ['New here? ', h('a', { href: '#/signup' }, 'Create an account')]));
  return h('main', { class: 'center' }, form);
}
