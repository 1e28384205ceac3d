// A new user's session with @gitbeaker/rest, the proxy as its GitLab host:
// who am I, a project by path, a group's projects over several pages, then the DORA metrics.
// Prints one JSON object for tests/system/test_gitbeaker.py to check.
import { Gitlab } from '@gitbeaker/rest';

const host = process.env.DORA_PROXY_URL;
const token = process.env.GITLAB_TOKEN;
const api = new Gitlab({ host, token });

const user = await api.Users.showCurrentUser();
const project = await api.Projects.show('s1/app');
const listed = await api.Groups.allProjects('s1', { perPage: 5, pagination: 'offset' });

// The Link headers a client pages with, followed as given.
const links = [];
let next = `${host}/api/v4/groups/10/projects?per_page=5`;
for (let page = 0; next && page < 10; page += 1) {
  const response = await fetch(next, { headers: { 'PRIVATE-TOKEN': token } });
  const link = response.headers.get('link') || '';
  links.push(link);
  const match = link.match(/<([^>]+)>; rel="next"/);
  next = match ? match[1] : null;
}

const metrics = await api.ProjectDORA4Metrics.all(project.id, 'deployment_frequency', {
  startDate: '2020-10-03',
  endDate: '2021-01-03',
});

console.log(JSON.stringify({
  username: user.username,
  project: project.path_with_namespace,
  listed: listed.map((p) => p.id),
  links,
  metrics,
}));
